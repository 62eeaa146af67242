//! Vendor command plugins: a site tool run under a deadline, JSON readings on stdout. Under construction.
