#!/bin/sh
# How the wali rule starts a WALI runtime (WAMR's iwasm built with WALI), as WALI's own
# binfmt wrapper does: iwasm gives a WALI program no environment of its own, so the
# environment goes in an --env-file of KEY=VALUE lines, which WALI's libc maps by its
# size: it must be a regular file (a pipe reads as empty). Which file, in WALI's order:
# the /tmp/wali_env.PID a WALI program leaves for the program it execs (PID is the one
# an exec keeps), else the file WALI_ENVFILE names (WALI's wrapper's variable), else
# the caller's environment written here. The files this script owns are opened on a
# descriptor and removed before iwasm starts, so none stays behind.
#   wali.sh IWASM [IWASM-OPTIONS...] MODULE [ARGS...]
iwasm=$1
shift
handed=/tmp/wali_env.$$
if [ -f "$handed" ] && [ -O "$handed" ]; then
    owned=$handed
elif [ -n "$WALI_ENVFILE" ]; then
    exec "$iwasm" --env-file="$WALI_ENVFILE" "$@"
else
    owned=$(mktemp) || exit 126
    env > "$owned"
fi
# The first descriptor from 9 down the caller left closed, so that no descriptor the
# program inherits is replaced and its own first open still gets the lowest number.
for fd in 9 8 7 6 5 4 3 none; do
    [ -e /proc/self/fd/$fd ] || break
done
if [ "$fd" = none ]; then
    echo "wasmbinfmt: descriptors 3-9 are all open; the WALI environment is left in $owned" >&2
    exec "$iwasm" --env-file="$owned" "$@"
fi
eval "exec $fd< \"\$owned\""
rm -f "$owned"
exec "$iwasm" --env-file=/dev/fd/$fd "$@"
