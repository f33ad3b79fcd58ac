#!/usr/bin/env bash
# Interop VM manager (thin wrapper): vm.sh image | up | configure | exec | put | get | down | list | console
# Run `tests/interop/vm.sh --help` or `vm.sh up --help`; see README.md.
exec python3 "$(dirname "${BASH_SOURCE[0]}")/ixvm.py" "$@"
