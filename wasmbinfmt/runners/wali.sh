#!/bin/sh
# How the wali rule starts a WALI runtime (WAMR's iwasm built with WALI), as WALI's own
# binfmt wrapper does: iwasm gives a WALI program no environment of its own, so the
# environment goes in an --env-file (KEY=VALUE lines). A WALI program that execs another
# leaves the child's environment in /tmp/wali_env.PID (the pid an exec keeps): taken, and
# removed. Either way iwasm reads it from a descriptor, so no file stays behind.
#   wali.sh IWASM [IWASM-OPTIONS...] MODULE [ARGS...]
iwasm=$1
shift
handed=/tmp/wali_env.$$
if [ -f "$handed" ] && [ -O "$handed" ]; then
    exec 3< "$handed"
    rm -f "$handed"
else
    exec 3<<ENVIRONMENT
$(env)
ENVIRONMENT
fi
exec "$iwasm" --env-file=/dev/fd/3 "$@"
