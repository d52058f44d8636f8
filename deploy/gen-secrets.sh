#!/bin/sh
# Write deploy/.env with fresh random secrets for compose.yaml (once; never committed).
#
#   deploy/gen-secrets.sh            writes deploy/.env unless it exists
#   deploy/gen-secrets.sh --print    prints the lines instead
#
# Hex values, so they can sit in a URL (the database and broker passwords do) unescaped.
set -eu
cd "$(dirname "$0")"

rand() {  # rand <bytes>: that many random bytes as hex
    if command -v openssl >/dev/null 2>&1; then
        openssl rand -hex "$1"
    else
        python3 -c "import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))" "$1"
    fi
}

lines() {
    echo "# prost secrets for deploy/compose.yaml: keep private, never commit"
    echo "PROST_JWT_SECRET=$(rand 32)"
    echo "POSTGRES_PASSWORD=$(rand 16)"
    echo "RABBITMQ_PASSWORD=$(rand 16)"
    echo "PROST_ADMIN_EMAIL=admin@prost.local"
    echo "PROST_ADMIN_PASSWORD=$(rand 12)"
}

if [ "${1:-}" = "--print" ]; then
    lines
    exit 0
fi
if [ -e .env ]; then
    echo "deploy/.env exists; not overwriting it (remove it first to make new secrets)" >&2
    exit 1
fi
umask 077
lines > .env
echo "wrote deploy/.env (mode 600)" >&2
