# Upgrade ($1 >= 2): the installed binary takes a verified backup before the new one can migrate.
if [ "$1" -ge 2 ] && [ -f /var/lib/dg-appliance/state.db ] && [ -x /usr/bin/dg-appliance ]; then
    mkdir -p /var/lib/dg-appliance-backups/pre-upgrade
    chown dg-appliance:dg-appliance /var/lib/dg-appliance-backups /var/lib/dg-appliance-backups/pre-upgrade
    runuser -u dg-appliance -- /usr/bin/dg-appliance backup create --config /etc/dg-appliance/config.toml \
        --data-dir /var/lib/dg-appliance --to /var/lib/dg-appliance-backups/pre-upgrade || exit 1
fi
