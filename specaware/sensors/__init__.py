"""Sensor catalogue (data files in `data/`, one JSON per sensor) and spectral response matrices.

    from specaware.sensors import get_sensor, list_sensors, srf_matrix
    s2 = get_sensor("sentinel-2a")
    avng = get_sensor("aviris-ng")
    W = srf_matrix(avng.wavelength, avng.fwhm, s2.wavelength, s2.fwhm, s2.responses)  # [13, 425]
"""
from specaware.sensors.catalogue import (
    DEFAULT_ABSORPTION_RANGES,
    DEFAULT_VALUE_CAPS,
    Sensor,
    UnknownSensorError,
    absorption_mask,
    get_sensor,
    list_sensors,
)
from specaware.sensors.srf import gaussian_response, srf_matrix

__all__ = ["DEFAULT_ABSORPTION_RANGES", "DEFAULT_VALUE_CAPS", "Sensor", "UnknownSensorError", "absorption_mask", "get_sensor", "list_sensors",
           "srf_matrix", "gaussian_response"]
