//! Processing an inbound report: correlate it with Herald's recipients and record what it says.
