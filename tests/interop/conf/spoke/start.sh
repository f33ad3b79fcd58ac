#!/bin/sh
# Spoke role: mGRE + charon (trap policy to the hub) + FRR nhrpd (rendered by ixvm.py).
set -e
/etc/ix/gre-setup.sh
/etc/ix/start-daemons.sh
