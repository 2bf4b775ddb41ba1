DROP TABLE user_avatars;
