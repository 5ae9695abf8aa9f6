"""Unit conversions at the edges; everything inside is SI (W, J, V, A, s, degC, Hz)."""

WH_PER_J = 1.0 / 3600.0
J_PER_WH = 3600.0
S_PER_H = 3600.0
C_PER_AH = 3600.0  # coulombs per ampere-hour
KELVIN_OFFSET = 273.15


def c_to_k(temp_c: float) -> float:
    """Celsius to kelvin."""
    return temp_c + KELVIN_OFFSET
