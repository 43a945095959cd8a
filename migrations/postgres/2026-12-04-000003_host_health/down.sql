DROP TABLE host_health;
