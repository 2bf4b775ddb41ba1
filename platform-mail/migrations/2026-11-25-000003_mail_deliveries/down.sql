DROP TABLE mail_deliveries;
