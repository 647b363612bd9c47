-- map_sweep. KEYS[1] map. Returns how many expired fields were deleted.
local _, _, dead = uwsx_live(KEYS[1], uwsx_now())
return dead
