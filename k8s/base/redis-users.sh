#!/bin/sh
# Redis's users file from its template (SPEC 4.1 rule 14): the users of deploy/redis-users.acl
# (`make acl`, without passwords), each `user NAME ...` line with ` #<SHA-256 of the password>`
# appended, the password read from the variable REDIS_<NAME>_PASSWORD (REDIS_INGEST_PASSWORD...),
# which a Secret or docker-compose sets. `user default` stays as the template has it (off).
#
#   sh redis-users.sh TEMPLATE OUTPUT
#
# Run by the Redis StatefulSet's init container (k8s/base/redis.yaml) and by docker-compose's
# redis (deploy/docker-compose.yml) before `redis-server --aclfile OUTPUT`. POSIX sh with
# busybox's or coreutils' sha256sum and tr: a password only ever passes through the shell's
# own printf into sha256sum's stdin, never onto a command line, and is never printed. A user
# without a password, or a name no variable can spell, stops it (exit 1) and writes nothing.
set -eu

if [ "$#" -ne 2 ]; then
  echo "usage: sh redis-users.sh TEMPLATE OUTPUT" >&2
  exit 2
fi
template=$1
output=$2
lower=abcdefghijklmnopqrstuvwxyz
upper=ABCDEFGHIJKLMNOPQRSTUVWXYZ
umask 077
partial="$output.partial"
trap 'rm -f "$partial"' EXIT
: >"$partial"

while IFS= read -r line || [ -n "$line" ]; do
  case $line in
    "user default "* | "user default") ;;
    "user "*)
      name=${line#user }
      name=${name%% *}
      case $name in
        "" | *[!a-z0-9_]*)
          echo "redis-users: user '$name': only a-z, 0-9 and _ make a variable name" >&2
          exit 1
          ;;
      esac
      variable=REDIS_$(printf '%s' "$name" | tr "$lower" "$upper")_PASSWORD
      eval "password=\${$variable:-}"
      if [ -z "$password" ]; then
        echo "redis-users: $variable is empty or unset: user $name needs a password" >&2
        exit 1
      fi
      digest=$(printf '%s' "$password" | sha256sum)
      line="$line #${digest%% *}"
      ;;
  esac
  printf '%s\n' "$line" >>"$partial"
done <"$template"

mv "$partial" "$output"
trap - EXIT
echo "redis-users: $output: $(grep -c '^user ' "$output") users"
