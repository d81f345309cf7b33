"""Raw datasets to cleaned, cached HDF5 views (library code: takes paths and arrays, knows no params)."""
