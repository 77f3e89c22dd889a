DROP TABLE withdrawn_areas;
