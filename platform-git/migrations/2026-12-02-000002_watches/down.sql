DROP TABLE repository_watches;
