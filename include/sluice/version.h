/* version: the one place the version is written (binary, status page, /status.json). */
#ifndef SLUICE_VERSION_H
#define SLUICE_VERSION_H

#define SLUICE_VERSION "0.3.0"

#endif
