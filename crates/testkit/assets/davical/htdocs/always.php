<?php
// caldav.php requires ./always.php: DAViCal's own.
require '/usr/share/davical/htdocs/always.php';
