#!/usr/bin/env bash
# Make sure a PostgreSQL server answers for the tests and the demo.
# Honours DATABASE_URL's host and port; on a dev machine with a local cluster
# that is down, starts it. Otherwise says what to do.
set -euo pipefail
url="${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
hostport="${url#*://}"; hostport="${hostport%%/*}"; hostport="${hostport%%\?*}"
hostport="${hostport##*@}"   # user[:password]@ is optional
host="${hostport%%:*}"; port="${hostport##*:}"
[ "$port" = "$host" ] && port=5432
[ -n "$host" ] || host=127.0.0.1
if command -v pg_isready >/dev/null 2>&1; then
  ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }
else  # no client tools: a TCP connect is enough to tell a server listens
  ready() { timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; }
fi
if ready; then exit 0; fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  version=$(ls /etc/postgresql | sort -n | tail -1)
  echo "PostgreSQL is not answering on $host:$port; starting cluster $version/main ..."
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do ready && { echo "PostgreSQL is up."; exit 0; }; sleep 1; done
fi
echo "ERROR: PostgreSQL does not answer on $host:$port." >&2
echo "Start it (on Debian: pg_ctlcluster --skip-systemctl-redirect 15 main start)" >&2
echo "or set DATABASE_URL to a server you can reach, then run the command again." >&2
exit 1
