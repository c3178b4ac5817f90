"""File-backed Cinder volume drivers for the lab; see the package docstring.

Volumes live in ``<directory>/<volume name>`` where the directory is the backend option
``mobility_volume_directory`` (default ``<state_path>/volumes/<backend name>``). The volume
name follows Cinder's ``volume-<name_id>``, so after a host copy the data is found under the
new name id, as on a real backend.
"""

import os

from oslo_config import cfg
from oslo_log import log as logging

from cinder.volume import driver

LOG = logging.getLogger(__name__)

LOCATION_PREFIX = "mobility-file:"

volume_opts = [
    cfg.StrOpt("mobility_volume_directory",
               help="Folder of this backend's volume files (default <state_path>/volumes/<backend>)."),
]


class FileVolumeDriver(driver.VolumeDriver):
    """Sparse files attached through the ``local`` connector: a host copy reads and writes real data."""

    VERSION = "1.0.0"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(volume_opts)
        self.backend_name = self.configuration.safe_get("volume_backend_name") or "file"
        self.directory = (self.configuration.safe_get("mobility_volume_directory")
                          or os.path.join(cfg.CONF.state_path, "volumes", self.backend_name))

    # ------------------------------------------------------------------ setup and stats

    def do_setup(self, context):
        os.makedirs(self.directory, exist_ok=True)

    def check_for_setup_error(self):
        if not os.path.isdir(self.directory):
            raise RuntimeError("volume folder %s is missing" % self.directory)

    def _update_volume_stats(self):
        usage = os.statvfs(self.directory)
        total = usage.f_blocks * usage.f_frsize // 1024 ** 3
        free = usage.f_bavail * usage.f_frsize // 1024 ** 3
        self._stats = {
            "volume_backend_name": self.backend_name,
            "vendor_name": "storage.mobility lab",
            "driver_version": self.VERSION,
            "storage_protocol": "local",
            "total_capacity_gb": max(total, 100),
            "free_capacity_gb": max(free, 100),
            "reserved_percentage": 0,
            "thin_provisioning_support": True,
            "max_over_subscription_ratio": 20.0,
            "QoS_support": False,
            "multiattach": False,
            "sparse_copy_volume": True,  # a host copy keeps the files sparse (dd conv=sparse)
            "location_info": LOCATION_PREFIX + self.directory,
        }

    # ------------------------------------------------------------------ volumes

    def path(self, volume):
        return os.path.join(self.directory, volume.name)

    def local_path(self, volume):
        return self.path(volume)

    def create_volume(self, volume):
        with open(self.path(volume), "wb") as handle:
            handle.truncate(volume.size * 1024 ** 3)

    def delete_volume(self, volume):
        try:
            os.unlink(self.path(volume))
        except FileNotFoundError:
            pass

    def extend_volume(self, volume, new_size):
        with open(self.path(volume), "r+b") as handle:
            handle.truncate(new_size * 1024 ** 3)

    def retype(self, context, volume, new_type, diff, host):
        # Nothing on a file depends on the type: a retype that stays on this backend is done.
        return True, None

    # ------------------------------------------------------------------ exports and connections

    def ensure_export(self, context, volume):
        pass

    def create_export(self, context, volume, connector):
        pass

    def remove_export(self, context, volume):
        pass

    def initialize_connection(self, volume, connector):
        return {"driver_volume_type": "local", "data": {"device_path": self.path(volume)}}

    def terminate_connection(self, volume, connector, **kwargs):
        pass

    def create_snapshot(self, snapshot):
        raise NotImplementedError("the lab's file volumes have no snapshots")

    def delete_snapshot(self, snapshot):
        pass


class MovingFileVolumeDriver(FileVolumeDriver):
    """Adds a driver-assisted migration: the file is renamed into the destination backend's folder."""

    def migrate_volume(self, context, volume, host):
        location = (host.get("capabilities") or {}).get("location_info") or ""
        if not location.startswith(LOCATION_PREFIX):
            LOG.info("Volume %s: destination %s is not a file backend, leaving it to a host copy",
                     volume.id, host.get("host"))
            return False, None
        destination = location[len(LOCATION_PREFIX):]
        if not os.path.isdir(destination) or os.stat(destination).st_dev != os.stat(self.directory).st_dev:
            return False, None
        os.rename(self.path(volume), os.path.join(destination, volume.name))
        LOG.info("Volume %s moved by rename to %s", volume.id, destination)
        return True, None
