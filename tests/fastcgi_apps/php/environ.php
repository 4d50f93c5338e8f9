<?php
// Each CGI variable's name and length: what php-cgi decoded.
header("Content-Type: text/plain");
$names = array_keys($_SERVER);
sort($names);
foreach ($names as $name) {
    if (is_string($_SERVER[$name])) {
        echo $name . " " . strlen($_SERVER[$name]) . "\n";
    }
}
