# Shared by both packages' maintainer scripts (scripts/package-deb.sh puts it
# in place of the #COMMON# line). POSIX sh, run by dpkg as root.

tether_user() {
	if ! getent passwd tether >/dev/null; then
		adduser --system --group --quiet --home /var/lib/tether --no-create-home \
			--shell /usr/sbin/nologin --gecos "Tether service" tether
	fi
	# State (0700) and logs (0750) belong to the service user; /etc/tether
	# is root's, readable by the service's group (it may hold secrets).
	install -d -m 0700 -o tether -g tether /var/lib/tether
	install -d -m 0750 -o tether -g tether /var/log/tether
	install -d -m 0750 -o root -g tether /etc/tether
}

# systemd is PID 1 when this directory exists (sd_booted(3)).
tether_systemd_running() {
	[ -d /run/systemd/system ]
}

# Enables the unit for the next boot the way debhelper does (was-enabled is
# true on a first install), without starting anything.
tether_enable_unit() {
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		deb-systemd-helper unmask "$1" >/dev/null || true
		if deb-systemd-helper --quiet was-enabled "$1"; then
			deb-systemd-helper enable "$1" >/dev/null || true
		else
			deb-systemd-helper update-state "$1" >/dev/null || true
		fi
	fi
}

tether_postrm_unit() {
	if tether_systemd_running; then
		systemctl --system daemon-reload >/dev/null || true
	fi
	if command -v deb-systemd-helper >/dev/null 2>&1; then
		case "$1" in
		remove) deb-systemd-helper mask "$2" >/dev/null || true ;;
		purge)
			deb-systemd-helper purge "$2" >/dev/null || true
			deb-systemd-helper unmask "$2" >/dev/null || true
			;;
		esac
	fi
}

# On purge, after the package removed its own state: the shared directories
# and the user go with the last Tether package purged.
tether_purge_shared() {
	rmdir /var/log/tether 2>/dev/null || true
	rmdir /etc/tether 2>/dev/null || true
	if rmdir /var/lib/tether 2>/dev/null || [ ! -e /var/lib/tether ]; then
		if getent passwd tether >/dev/null; then
			userdel tether >/dev/null 2>&1 || true
		fi
		if getent group tether >/dev/null; then
			groupdel tether >/dev/null 2>&1 || true
		fi
	fi
}
