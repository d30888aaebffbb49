DROP TABLE synckit_snapshots;
