DROP TABLE code_index;
