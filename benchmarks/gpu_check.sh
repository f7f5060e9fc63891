#!/usr/bin/env bash
# The GPU check's old path, kept so that `bash benchmarks/gpu_check.sh OUT` (the command the project's GPU-session
# instructions name) still runs it: the check itself lives in gpu_check/run.sh.
exec bash "$(dirname "$0")/../gpu_check/run.sh" "$@"
