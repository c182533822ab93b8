"""The wire: the protocol (the only place that knows the bytes), the publisher, the subscriber
library, the control socket, CURVE keys, the sockets' shared setup and the proxy."""
