<?php
/*
 * davpush's tested SabreDAV server: CalDAV, CardDAV and WebDAV files (SabreDAV 1.8, Debian's
 * php-sabre-dav), mounted under /dav.php/ like Baïkal, with Basic authentication and PDO SQLite.
 *
 *   /dav.php/principals/<user>/            principals
 *   /dav.php/calendars/<user>/<calendar>/   CalDAV calendar home and calendars
 *   /dav.php/addressbooks/<user>/<book>/    CardDAV address book home and books
 *   /dav.php/files/<user>/                  plain WebDAV files (LOCK/UNLOCK too), the owner's only
 *
 * Configuration: the environment variable SABREDAV_DATA names the data folder (db.sqlite made
 * by setup.php, and files/). Run it with PHP's built-in server as the router script:
 *   SABREDAV_DATA=/srv/sabredav php -S 127.0.0.1:8800 server.php
 * or from any PHP SAPI that routes /dav.php/ to it.
 */

date_default_timezone_set('UTC');
// SabreDAV 1.8 predates PHP 8: its deprecation notices must not end up in responses.
error_reporting(E_ALL & ~E_DEPRECATED & ~E_USER_DEPRECATED);
ini_set('display_errors', '0');

require_once 'Sabre/autoload.php';

$data = getenv('SABREDAV_DATA') ?: __DIR__ . '/data';
$pdo = new \PDO('sqlite:' . $data . '/db.sqlite');
$pdo->setAttribute(\PDO::ATTR_ERRMODE, \PDO::ERRMODE_EXCEPTION);
// Concurrent requests (PHP_CLI_SERVER_WORKERS, php-fpm) wait for each other's writes.
$pdo->exec('PRAGMA busy_timeout = 5000');

/** Basic authentication against the `users` table (password_hash()). */
class DavpushBasicAuth extends \Sabre\DAV\Auth\Backend\AbstractBasic {
    private $pdo;
    function __construct(\PDO $pdo) { $this->pdo = $pdo; }
    protected function validateUserPass($username, $password) {
        $stmt = $this->pdo->prepare('SELECT password FROM users WHERE username = ?');
        $stmt->execute(array($username));
        $hash = $stmt->fetchColumn();
        return is_string($hash) && password_verify($password, $hash);
    }
}

/** /files/: one folder per user; only its owner sees or enters it. */
class DavpushFilesRoot extends \Sabre\DAV\Collection {
    private $auth;
    private $dir;
    function __construct(\Sabre\DAV\Auth\Plugin $auth, $dir) { $this->auth = $auth; $this->dir = $dir; }
    function getName() { return 'files'; }
    function getChildren() {
        $user = $this->auth->getCurrentUser();
        return $user === null ? array() : array($this->getChild($user));
    }
    function getChild($name) {
        if ($name !== $this->auth->getCurrentUser()) {
            throw new \Sabre\DAV\Exception\Forbidden('Only the owner may access ' . $name . '/');
        }
        if (!is_dir($this->dir . '/' . $name)) {
            mkdir($this->dir . '/' . $name, 0770, true);
        }
        return new \Sabre\DAV\FSExt\Directory($this->dir . '/' . $name);
    }
}

$authBackend = new DavpushBasicAuth($pdo);
$authPlugin = new \Sabre\DAV\Auth\Plugin($authBackend, 'SabreDAV');
$principalBackend = new \Sabre\DAVACL\PrincipalBackend\PDO($pdo);
$carddavBackend = new \Sabre\CardDAV\Backend\PDO($pdo);
$caldavBackend = new \Sabre\CalDAV\Backend\PDO($pdo);

$server = new \Sabre\DAV\Server(array(
    new \Sabre\CalDAV\Principal\Collection($principalBackend),
    new \Sabre\CalDAV\CalendarRootNode($principalBackend, $caldavBackend),
    new \Sabre\CardDAV\AddressBookRoot($principalBackend, $carddavBackend),
    new DavpushFilesRoot($authPlugin, $data . '/files'),
));
$server->setBaseUri('/dav.php/');
$server->addPlugin($authPlugin);
$server->addPlugin(new \Sabre\CalDAV\Plugin());
$server->addPlugin(new \Sabre\CardDAV\Plugin());
$acl = new \Sabre\DAVACL\Plugin();
// Principals are listed only to themselves (no directory of all users).
$acl->hideNodesFromListings = true;
$server->addPlugin($acl);
$server->addPlugin(new \Sabre\DAV\Locks\Plugin(new \Sabre\DAV\Locks\Backend\PDO($pdo)));

if (PHP_SAPI === 'cli-server' && strpos($_SERVER['REQUEST_URI'], '/dav.php/') !== 0
    && $_SERVER['REQUEST_URI'] !== '/dav.php') {
    // PHP's built-in server sends every request here: only /dav.php/ is the DAV tree.
    if ($_SERVER['REQUEST_URI'] === '/.well-known/caldav' || $_SERVER['REQUEST_URI'] === '/.well-known/carddav') {
        header('Location: /dav.php/', true, 301);
        return true;
    }
    http_response_code(404);
    return true;
}
$server->exec();
