<?php
// DAViCal's configuration (config/config.php next to htdocs/). @DB@ is the database that
// /usr/share/davical/dba/create-database.sh made; @PGHOST@/@PGPORT@/@PGUSER@ where it is.
// application_name tags DAViCal's own connections: the out-of-band trigger (docs) ignores them.
$c->pg_connect[] = "host=@PGHOST@ port=@PGPORT@ dbname=@DB@ user=@PGUSER@ application_name=davical";
$c->system_name = 'DAViCal';
$c->admin_email = 'admin@example.org';
// Every calendar and address book is made by its client (MKCALENDAR, MKCOL).
$c->collections_always_exist = false;
