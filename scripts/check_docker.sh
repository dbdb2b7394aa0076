#!/bin/sh
# `make dev-up` runs this first: the compose stack needs the docker CLI, its compose plugin (`docker
# compose`, v2; the old `docker-compose` is not used) and a running daemon this user may talk to.
# Each missing piece is named with what to install, instead of docker's own "unknown shorthand flag:
# 'f' in -f" (what `docker compose -f` prints when the plugin is missing).
# (The local mesh needs none of this: `make run`.)
set -u

if ! command -v docker >/dev/null 2>&1; then
    echo "make dev-up: docker is not installed." >&2
    echo "  Install Docker Engine and its compose plugin: from Docker's apt repository, docker-ce and" >&2
    echo "  docker-compose-plugin (https://docs.docker.com/engine/install/); on Ubuntu 24.04+ / Debian 13:" >&2
    echo "  apt-get install docker.io docker-compose-v2. Without Docker, \`make run\` starts the same mesh." >&2
    exit 1
fi
if ! docker compose version >/dev/null 2>&1; then
    echo "make dev-up: docker is installed but its compose plugin is not (\`docker compose\` fails)." >&2
    echo "  Install it: docker-compose-plugin from Docker's apt repository, or on Ubuntu 24.04+ / Debian 13" >&2
    echo "  apt-get install docker-compose-v2; see https://docs.docker.com/compose/install/linux/" >&2
    exit 1
fi
if ! out=$(docker info 2>&1 >/dev/null); then
    echo "make dev-up: the Docker daemon is not reachable:" >&2
    echo "$out" | sed -n '1,3s/^/  /p' >&2
    echo "  Start it (sudo systemctl start docker), or let this user use it (sudo usermod -aG docker \$USER," >&2
    echo "  then log in again)." >&2
    exit 1
fi
