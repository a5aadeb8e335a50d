<?php
// DAViCal's caldav.php, run from this folder so that DAViCal finds ../config/config.php.
chdir(__DIR__);
require '/usr/share/davical/htdocs/caldav.php';
