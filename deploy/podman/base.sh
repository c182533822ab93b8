#!/bin/sh
# Makes a local stand-in for python:3.11-slim-bookworm where no image registry is reachable:
# Debian bookworm (debootstrap --variant=minbase) with Debian's Python 3.11 as a venv at
# /usr/local, so python and pip are /usr/local/bin/python and /usr/local/bin/pip as in the
# official image, and Python's headers as there (for an extension built in a stage that adds a
# compiler); no compiler, no cmake. The CA bundle given (default: Debian's, of this
# host) is added to the image's trust store, and PIP_CERT and SSL_CERT_FILE name it, so pip
# in a build reaches a package index behind a proxy that this host trusts.
#
#   deploy/podman/base.sh [--force] [--mirror URL] [--ca-bundle FILE] IMAGE_NAME
#
# --force rebuilds an image that exists (otherwise nothing is done). The Debian mirror is the
# one this host's apt uses (/etc/apt/sources.list, /etc/apt/sources.list.d/) unless --mirror
# or DEBIAN_MIRROR names one. Run as root; PODMAN overrides the podman command line.
set -eu

PODMAN=${PODMAN:-podman --runtime runc}
MIRROR=${DEBIAN_MIRROR:-}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
FORCE=0
usage() {
    echo "usage: $0 [--force] [--mirror URL] [--ca-bundle FILE] IMAGE_NAME" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case $1 in
        --force) FORCE=1 ;;
        --mirror) [ $# -ge 2 ] || usage; MIRROR=$2; shift ;;
        --ca-bundle) [ $# -ge 2 ] || usage; CA_BUNDLE=$2; shift ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) break ;;
    esac
    shift
done
[ $# -eq 1 ] || usage
IMAGE=$1

if [ "$FORCE" = 0 ] && $PODMAN image exists "$IMAGE"; then
    echo "$IMAGE exists (--force rebuilds it)"
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "$0: debootstrap needs root" >&2; exit 1; }
[ -r "$CA_BUNDLE" ] || { echo "$0: no CA bundle at $CA_BUNDLE (--ca-bundle FILE)" >&2; exit 1; }

debian_mirror() {
    # The first Debian archive this host's apt reads: one-line (.list) or deb822 (.sources).
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }' \
            "$f" | grep -v -- '-security' | head -n 1
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' "$f" \
            | grep -v -- '-security'
    done
}
if [ -z "$MIRROR" ]; then
    MIRROR=$(debian_mirror | grep -E '/debian/?$' | head -n 1 || true)
fi
[ -n "$MIRROR" ] || { echo "$0: no Debian mirror found in /etc/apt; pass --mirror URL" >&2; exit 1; }

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/streamtag-base.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT
echo "debootstrap bookworm from $MIRROR into $ROOT"
debootstrap --variant=minbase --include=ca-certificates,netbase,tzdata,python3,python3-venv,python3-dev \
    bookworm "$ROOT" "$MIRROR"

# The host's bundle joins the image's trust store (update-ca-certificates keeps it there when
# a later apt install reruns it).
cp "$CA_BUNDLE" "$ROOT/usr/local/share/ca-certificates/build-host-bundle.crt"
chroot "$ROOT" update-ca-certificates >/dev/null
# python and pip at /usr/local/bin as in the official image: a venv over Debian's Python.
chroot "$ROOT" python3 -m venv /usr/local
chroot "$ROOT" /usr/local/bin/python -m pip --version
# As Debian's official images: apt keeps no package cache after an install.
cat >"$ROOT/etc/apt/apt.conf.d/docker-clean" <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF
rm -rf "$ROOT/var/lib/apt/lists/"* "$ROOT/var/cache/apt/"*.bin "$ROOT/var/cache/apt/archives/"*.deb

tar -C "$ROOT" --numeric-owner -c . | $PODMAN import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PIP_DISABLE_PIP_VERSION_CHECK=1' \
    --change 'CMD ["python3"]' \
    - "$IMAGE"
echo "made $IMAGE"
