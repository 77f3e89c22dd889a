//! Messages between the web frontend and the ftp-stager.
