"""Live tests of a running environment: load and dynamic scans."""
