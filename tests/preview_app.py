"""A trivial web app for preview tests: Perl (in every Debian image, the base one too),
serving index.html, echoing the Cookie header it got, and echoing upper-cased bytes after
an `Upgrade` (a stand-in for a dev server's live-reload WebSocket)."""

from __future__ import annotations

SERVER = r"""use strict;
use IO::Socket::INET;
my $port = $ENV{PORT} || 8000;
my $server = IO::Socket::INET->new(
    LocalAddr => '0.0.0.0', LocalPort => $port, Listen => 32, ReuseAddr => 1
) or die "cannot listen on $port: $!";
$SIG{CHLD} = 'IGNORE';
print "listening on $port\n";
while (my $client = $server->accept) {
    if (fork()) { close $client; next; }
    my $head = '';
    while (my $line = <$client>) { $head .= $line; last if $line eq "\r\n"; }
    $client->autoflush(1);
    if ($head =~ /^Upgrade:/mi) {
        print $client "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
            . "Connection: Upgrade\r\n\r\n";
        while (sysread($client, my $bytes, 4096)) { syswrite($client, uc $bytes); }
        exit 0;
    }
    my ($cookie) = $head =~ /^Cookie: *([^\r\n]*)/mi;
    $cookie = '' unless defined $cookie;
    open my $file, '<', 'index.html' or die;
    local $/;
    my $body = <$file>;
    print $client "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
        . "Content-Length: " . length($body) . "\r\nX-Seen-Cookie: $cookie\r\n"
        . "Connection: close\r\n\r\n$body";
    close $client;
    exit 0;
}
"""

COMMAND = "perl server.pl"


def page(text: str) -> str:
    head = f"<!doctype html><html><head><title>{text}</title></head>"
    return f"{head}<body><h1>{text}</h1></body></html>\n"


def files(text: str) -> dict[str, str]:
    return {"server.pl": SERVER, "index.html": page(text)}
