/* A streamtag subscriber in C: libzmq and jansson, nothing from streamtag.
 *
 *   cc subscriber.c $(pkg-config --cflags --libs libzmq jansson) -o subscriber
 *   ./subscriber [--count N] ENDPOINT [PREFIX...]
 *
 * Connects a SUB socket to a daemon's feed (or a proxy's backend), subscribes to each PREFIX
 * (none: everything), and prints one line per message: the topic, seq, and for events the tag
 * and its state. What it does is what docs/protocol.md asks of every reader: three frames a
 * message, each frame's size bounded before its JSON is parsed, the major version checked,
 * gaps in seq counted per topic, and a frame past MAXMSGSIZE survived: libzmq drops the
 * connection that carries one and does not connect again by itself, so the monitor's
 * "disconnected" event is answered with zmq_disconnect and zmq_connect. streamtag's JSON
 * Schema (`streamtag protocol schema`) says the rest of what a body may hold.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define MAX_FRAME_BYTES (4 * 1024 * 1024) /* any frame: ZeroMQ drops the connection past it */
#define MAX_HEADER_BYTES 4096
#define MAX_TOPIC_BYTES 256
#define MAX_TOPICS 1024 /* topics whose last seq is kept, for gaps */

struct last_seq {
    char topic[MAX_TOPIC_BYTES + 1];
    char session[129];
    json_int_t seq;
};

static struct last_seq seen[MAX_TOPICS];
static int n_seen = 0;

/* How many messages of this topic were lost just before this one (0 for the first heard). */
static json_int_t gap(const char *topic, const char *session, json_int_t seq) {
    for (int i = 0; i < n_seen; i++) {
        if (strcmp(seen[i].topic, topic) == 0) {
            json_int_t lost = 0;
            if (strcmp(seen[i].session, session) == 0 && seq > seen[i].seq + 1)
                lost = seq - seen[i].seq - 1;
            snprintf(seen[i].session, sizeof seen[i].session, "%s", session);
            seen[i].seq = seq;
            return lost;
        }
    }
    if (n_seen < MAX_TOPICS) {
        snprintf(seen[n_seen].topic, sizeof seen[n_seen].topic, "%s", topic);
        snprintf(seen[n_seen].session, sizeof seen[n_seen].session, "%s", session);
        seen[n_seen].seq = seq;
        n_seen++;
    }
    return 0;
}

/* Reads the rest of a message's frames; returns how many there were in all (0 on error). */
static int read_frames(void *sock, zmq_msg_t frames[3]) {
    int count = 0;
    int more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, 0) < 0) {
            zmq_msg_close(&part);
            break;
        }
        more = zmq_msg_more(&part);
        if (count < 3) { /* the caller closes the first three */
            zmq_msg_init(&frames[count]);
            zmq_msg_move(&frames[count], &part);
        }
        zmq_msg_close(&part); /* past the third: malformed, never looked at */
        count++;
    }
    return count;
}

static json_t *parse(zmq_msg_t *frame, size_t most) {
    if (zmq_msg_size(frame) > most)
        return NULL;
    return json_loadb(zmq_msg_data(frame), zmq_msg_size(frame), JSON_REJECT_DUPLICATES, NULL);
}

static void show(zmq_msg_t frames[3]) {
    size_t topic_size = zmq_msg_size(&frames[0]);
    if (topic_size > MAX_TOPIC_BYTES) {
        fprintf(stderr, "refused: a topic of %zu bytes\n", topic_size);
        return;
    }
    char topic[MAX_TOPIC_BYTES + 1];
    memcpy(topic, zmq_msg_data(&frames[0]), topic_size);
    topic[topic_size] = '\0';
    json_t *header = parse(&frames[1], MAX_HEADER_BYTES);
    json_t *body = header ? parse(&frames[2], MAX_FRAME_BYTES) : NULL;
    const char *version = header ? json_string_value(json_object_get(header, "version")) : NULL;
    json_t *seq = header ? json_object_get(header, "seq") : NULL;
    const char *session = header ? json_string_value(json_object_get(header, "session")) : NULL;
    if (!header || !body || !json_is_object(header) || !json_is_object(body) || !version ||
        !json_is_integer(seq) || !session || strlen(session) > 128) {
        fprintf(stderr, "refused: a message on %s that is not JSON of the protocol\n", topic);
    } else if (strncmp(version, "1.", 2) != 0) {
        fprintf(stderr, "refused: protocol version %s (this reader reads 1.x)\n", version);
    } else {
        json_int_t lost = gap(topic, session, json_integer_value(seq));
        if (lost > 0)
            printf("gap: %" JSON_INTEGER_FORMAT " messages of %s lost\n", lost, topic);
        printf("%s %" JSON_INTEGER_FORMAT, topic, json_integer_value(seq));
        const char *tag = json_string_value(json_object_get(body, "tag"));
        const char *state = json_string_value(json_object_get(body, "state"));
        if (strncmp(topic, "event.", 6) == 0 && tag && state)
            printf(" %s %s", tag, state);
        printf("\n");
        fflush(stdout);
    }
    json_decref(header);
    json_decref(body);
}

int main(int argc, char **argv) {
    long count = -1; /* messages to print before leaving; -1: for ever */
    int arg = 1;
    if (argc > 2 && strcmp(argv[1], "--count") == 0) {
        count = strtol(argv[2], NULL, 10);
        arg = 3;
    }
    if (arg >= argc) {
        fprintf(stderr, "usage: %s [--count N] ENDPOINT [PREFIX...]\n", argv[0]);
        return 2;
    }
    const char *endpoint = argv[arg++];
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_SUB);
    int64_t most = MAX_FRAME_BYTES;
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &most, sizeof most);
    if (arg == argc)
        zmq_setsockopt(sock, ZMQ_SUBSCRIBE, "", 0);
    for (; arg < argc; arg++)
        zmq_setsockopt(sock, ZMQ_SUBSCRIBE, argv[arg], strlen(argv[arg]));
    /* the recipe: hear of a dropped connection, and connect again */
    zmq_socket_monitor(sock, "inproc://feed-monitor", ZMQ_EVENT_DISCONNECTED);
    void *monitor = zmq_socket(ctx, ZMQ_PAIR);
    zmq_connect(monitor, "inproc://feed-monitor");
    if (zmq_connect(sock, endpoint) != 0) {
        fprintf(stderr, "cannot connect to %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        return 1;
    }
    zmq_pollitem_t items[] = {{sock, 0, ZMQ_POLLIN, 0}, {monitor, 0, ZMQ_POLLIN, 0}};
    long printed = 0;
    while (count < 0 || printed < count) {
        if (zmq_poll(items, 2, -1) < 0)
            break;
        /* every message waiting is read first: libzmq aborts the process when a disconnect
           discards a message that is being read */
        zmq_pollitem_t waiting = {sock, 0, ZMQ_POLLIN, 0};
        while ((count < 0 || printed < count) && zmq_poll(&waiting, 1, 0) > 0) {
            zmq_msg_t frames[3];
            int n = read_frames(sock, frames);
            if (n == 3) {
                show(frames);
                printed++;
            } else if (n > 0) {
                fprintf(stderr, "refused: a message of %d frames\n", n);
            }
            for (int i = 0; i < n && i < 3; i++)
                zmq_msg_close(&frames[i]);
        }
        if (items[1].revents & ZMQ_POLLIN) {
            zmq_msg_t event;
            int more = 1;
            while (more) { /* an event is two frames: what happened, and the endpoint */
                zmq_msg_init(&event);
                zmq_msg_recv(&event, monitor, 0);
                more = zmq_msg_more(&event);
                zmq_msg_close(&event);
            }
            fprintf(stderr, "connection to %s dropped (a frame past %d bytes?): connecting "
                            "again\n", endpoint, MAX_FRAME_BYTES);
            zmq_disconnect(sock, endpoint);
            zmq_connect(sock, endpoint);
        }
    }
    zmq_close(monitor);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return 0;
}
