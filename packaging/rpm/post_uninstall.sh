# rpm has no purge: data, backups and configuration stay; remove /var/lib/dg-appliance,
# /var/lib/dg-appliance-backups and /etc/dg-appliance by hand to erase them.
# A CPU wake-up latency node an earlier release's udev rule changed goes back to root-only.
if [ -c /dev/cpu_dma_latency ] && [ "$(stat -c %G /dev/cpu_dma_latency)" = dg-appliance ]; then
    chown root:root /dev/cpu_dma_latency && chmod 0600 /dev/cpu_dma_latency || true
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
