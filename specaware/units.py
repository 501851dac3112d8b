"""The one wavelength-unit rule, shared by the readers (numpy) and the model (torch).

Inside specaware every band centre and FWHM is in nm. No optical sensor has a band centre below
30 nm, and none beyond 30 µm (Landsat TIRS ~12 µm is the longest in the catalogue), so centres
that all lie below `MICROMETRE_LIMIT` can only be micrometres. The readers apply it when a file
gives no units (`data/band_metadata.unit_factor`); the model applies it to tensors handed to it
directly (`model/units.to_nanometres`). No imports, so both sides can use it.
"""

MICROMETRE_LIMIT = 30.0
