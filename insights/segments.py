"""Population segments. Stored as small integer codes: the position in these tuples."""

ALL = "*"
AGE_BANDS = (ALL, "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
GENDERS = (ALL, "f", "m")
ALL_CODE = 0
