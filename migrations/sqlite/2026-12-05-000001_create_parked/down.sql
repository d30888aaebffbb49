DROP TABLE synckit_parked;
