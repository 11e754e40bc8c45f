systemd-sysusers dg-appliance.conf
systemd-tmpfiles --create dg-appliance.conf
chown root:dg-appliance /etc/dg-appliance /etc/dg-appliance/config.toml
chmod 0750 /etc/dg-appliance
chmod 0640 /etc/dg-appliance/config.toml
# The udev rule makes the CPU wake-up latency node group-writable; udev applies it at
# boot, this applies it to the node that exists now.
if command -v udevadm >/dev/null 2>&1 && [ -S /run/udev/control ]; then
    udevadm control --reload-rules || true
    udevadm trigger --action=change --sysname-match=cpu_dma_latency || true
    udevadm settle --timeout=10 || true
fi
systemctl enable dg-appliance.service dg-appliance-backup.timer >/dev/null 2>&1 || true
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$1" -ge 2 ]; then systemctl try-restart dg-appliance.service; else systemctl start dg-appliance.service; fi
    systemctl start dg-appliance-backup.timer
fi
