<?php
/*
 * Creates the SQLite database of server.php and its users, each with a calendar and an address
 * book named `default` (as Baïkal does):
 *   php setup.php /srv/sabredav alice:alice-password bob:bob-password
 * Running it again adds users; an existing user's password is replaced.
 */

if ($argc < 2) {
    fwrite(STDERR, "usage: php setup.php DATA_DIR [user:password ...]\n");
    exit(64);
}
$data = $argv[1];
if (!is_dir($data . '/files')) {
    mkdir($data . '/files', 0770, true);
}
$pdo = new \PDO('sqlite:' . $data . '/db.sqlite');
$pdo->setAttribute(\PDO::ATTR_ERRMODE, \PDO::ERRMODE_EXCEPTION);
$pdo->exec('PRAGMA journal_mode = WAL');
// The schema of SabreDAV 1.8's PDO backends (examples/sql/sqlite.*.sql), and a users table
// with password_hash() hashes for Basic authentication.
$pdo->exec(<<<'SQL'
CREATE TABLE IF NOT EXISTS addressbooks (id integer primary key asc, principaluri text, displayname text,
  uri text, description text, ctag integer);
CREATE TABLE IF NOT EXISTS cards (id integer primary key asc, addressbookid integer, carddata blob, uri text,
  lastmodified integer);
CREATE TABLE IF NOT EXISTS calendarobjects (id integer primary key asc, calendardata blob, uri text,
  calendarid integer, lastmodified integer, etag text, size integer, componenttype text, firstoccurence integer,
  lastoccurence integer);
CREATE TABLE IF NOT EXISTS calendars (id integer primary key asc, principaluri text, displayname text, uri text,
  ctag integer, description text, calendarorder integer, calendarcolor text, timezone text, components text,
  transparent bool);
CREATE TABLE IF NOT EXISTS locks (id integer primary key asc, owner text, timeout integer, created integer,
  token text, scope integer, depth integer, uri text);
CREATE TABLE IF NOT EXISTS principals (id INTEGER PRIMARY KEY ASC, uri TEXT, email TEXT, displayname TEXT,
  vcardurl TEXT, UNIQUE(uri));
CREATE TABLE IF NOT EXISTS groupmembers (id INTEGER PRIMARY KEY ASC, principal_id INTEGER, member_id INTEGER,
  UNIQUE(principal_id, member_id));
CREATE TABLE IF NOT EXISTS users (id integer primary key asc, username TEXT, password TEXT, UNIQUE(username));
SQL);
// bcrypt's cost: PHP's default unless SABREDAV_PASSWORD_COST says otherwise (the tests use the
// minimum, 4: every request checks the password, and litmus makes about a thousand).
$cost = getenv('SABREDAV_PASSWORD_COST');
$hashOptions = $cost === false || $cost === '' ? array() : array('cost' => (int) $cost);
for ($i = 2; $i < $argc; $i++) {
    list($user, $password) = explode(':', $argv[$i], 2);
    $pdo->prepare('INSERT OR REPLACE INTO users (username, password) VALUES (?, ?)')
        ->execute(array($user, password_hash($password, PASSWORD_DEFAULT, $hashOptions)));
    $principal = 'principals/' . $user;
    foreach (array($principal, $principal . '/calendar-proxy-read', $principal . '/calendar-proxy-write') as $uri) {
        $pdo->prepare('INSERT OR IGNORE INTO principals (uri, email, displayname) VALUES (?, ?, ?)')
            ->execute(array($uri, $uri === $principal ? $user . '@example.org' : null, $uri === $principal ? $user : null));
    }
    $has = $pdo->prepare('SELECT count(*) FROM calendars WHERE principaluri = ?');
    $has->execute(array($principal));
    if ($has->fetchColumn() == 0) {
        $pdo->prepare("INSERT INTO calendars (principaluri, displayname, uri, ctag, components) VALUES (?, 'Default', 'default', 1, 'VEVENT,VTODO')")
            ->execute(array($principal));
        $pdo->prepare("INSERT INTO addressbooks (principaluri, displayname, uri, ctag) VALUES (?, 'Default', 'default', 1)")
            ->execute(array($principal));
    }
}
