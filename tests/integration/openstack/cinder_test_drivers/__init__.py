"""Small Cinder volume drivers for the OpenStack lab (loaded by cinder-volume, never by the tests).

``file_volume.FileVolumeDriver`` keeps each volume as a sparse file and hands it out through
os-brick's ``local`` connector, so Cinder's host-assisted (generic) migration really copies the
blocks with ``dd``. ``file_volume.MovingFileVolumeDriver`` adds a driver-assisted move: when the
destination backend is one of these drivers, the file is renamed into its folder and Cinder
records the move without copying.
"""
