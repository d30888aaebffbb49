DROP TABLE IF EXISTS synckit_leases;
