# Last instance going away ($1 = 0): stop and disable; data stays.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop dg-appliance-backup.timer dg-appliance-backup.service dg-appliance.service || true
    fi
    systemctl disable dg-appliance.service dg-appliance-backup.timer >/dev/null 2>&1 || true
fi
