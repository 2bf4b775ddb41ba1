DROP TABLE protected_branches;
DROP TABLE repository_collaborators;
DROP TABLE repositories;
