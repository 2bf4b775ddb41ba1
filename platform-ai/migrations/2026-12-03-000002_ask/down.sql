DROP TABLE ai_usage;
DROP TABLE ask_turns;
DROP TABLE ask_conversations;
