# rpm has no purge: data, backups and configuration stay; remove /var/lib/dg-appliance,
# /var/lib/dg-appliance-backups and /etc/dg-appliance by hand to erase them.
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
