systemd-sysusers dg-appliance.conf
systemd-tmpfiles --create dg-appliance.conf
chown root:dg-appliance /etc/dg-appliance /etc/dg-appliance/config.toml
chmod 0750 /etc/dg-appliance
chmod 0640 /etc/dg-appliance/config.toml
# Earlier releases made the CPU wake-up latency node group-writable through a udev
# rule; this release changes no device. Put a node such a release changed back to the
# kernel's root-only mode.
if [ -c /dev/cpu_dma_latency ] && [ "$(stat -c %G /dev/cpu_dma_latency)" = dg-appliance ]; then
    chown root:root /dev/cpu_dma_latency && chmod 0600 /dev/cpu_dma_latency || true
fi
systemctl enable dg-appliance.service dg-appliance-backup.timer >/dev/null 2>&1 || true
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$1" -ge 2 ]; then systemctl try-restart dg-appliance.service; else systemctl start dg-appliance.service; fi
    systemctl start dg-appliance-backup.timer
fi
