package diagnose

// ExtremitiesWarn is the count from which a room's forward extremities are worth a look.
const ExtremitiesWarn = 10
