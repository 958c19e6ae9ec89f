package DefarmWs;

# ---------------------------------------------------------------------------
# DefarmWs -- an RFC 6455 WebSocket client for the tests and the benchmark,
# written for this project on Perl's core and Debian's own modules only.
# It can speak the protocol correctly and also break it on purpose.
#
#   use DefarmWs qw(ws_connect);
#
#   my $ws = ws_connect($port, "/api/notifications/ws?token=$jwt");
#   if (ref $ws eq 'DefarmWs') {                  # 101, accept key checked
#       my $msg = $ws->recv_json(10);             # {type => 'connected', ...}
#       $ws->send_text('{"action":"mark_read","notification_id":"..."}');
#       $ws->send_frame(0x1, 'x', mask => 0);     # an unmasked frame
#       my $close = $ws->recv_close(10);          # {code, reason}
#       ok($ws->wait_eof(10), 'TCP closed');
#   } else {                                      # the upgrade was refused
#       is($ws->{status}, 401);                   # {status, headers, body,
#   }                                             #  json, error}
#
# ws_connect($port, $path, %opt), options:
#   headers => {Name => value}  added, or replacing the default of that
#                               name; a value of undef leaves it out
#   method  => 'GET', version => 13, key => base64, host => 'localhost',
#   http    => '1.1' (the request line's HTTP version)
#   rcvbuf  => bytes            SO_RCVBUF set before connect (a slow reader)
#   timeout => seconds          for the handshake (10)
#   nonblock => 1               only send the handshake: ->handshake_step
#                               (or DefarmWs::connect_many) finishes it
#
# Frames a test can send: send_text, send_binary, send_ping, send_pong,
# send_close($code, $reason), send_cont; send_frame($opcode, $payload,
# fin => 0|1, rsv => 0..7, mask => 0|1, len16 => 1, len64 => 1,
# len => N (a length that is not the payload's)); send_fragmented($opcode,
# $payload, $n) (N frames); send_raw($bytes).
#
# Receiving: recv_frame($timeout) -> {fin, rsv, opcode, payload}, or undef
# (timeout or EOF: ->{eof} tells which) or {error => why} for a frame no
# server may send (masked, RSV bits, unknown opcode, a control frame over
# 125 bytes or fragmented), which also sets ->{server_error}.
# recv_json($timeout, pings => 1) assembles fragments, answers pings with
# pongs (or returns them as {type => '_ping', payload} with pings => 1,
# unanswered unless pong => 1 too),
# skips pongs, decodes text; it returns undef on a close frame (kept in
# ->{close} as {code, reason}), a timeout or EOF.  recv_close($timeout)
# reads until a close frame (answering pings unless pong => 0);
# wait_eof($timeout) until the TCP close.
# ---------------------------------------------------------------------------

use strict;
use warnings;

use Exporter 'import';
use Digest::SHA ();
use Errno ();
use Fcntl ();
use IO::Handle ();
use IO::Poll ();
use JSON::PP ();
use MIME::Base64 ();
use Socket ();
use Time::HiRes ();

our @EXPORT_OK = qw(ws_connect ws_accept_for connect_many pump_many
                    build_frame);

use constant GUID => '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

use constant {
    OP_CONT => 0x0, OP_TEXT => 0x1, OP_BINARY => 0x2,
    OP_CLOSE => 0x8, OP_PING => 0x9, OP_PONG => 0xA,
};

my $Json = JSON::PP->new->utf8->canonical;

# ---------------------------------------------------------------- framing

# The Sec-WebSocket-Accept a server must answer for $key.
sub ws_accept_for {
    my ($key) = @_;
    return MIME::Base64::encode_base64(Digest::SHA::sha1($key . GUID), '');
}

# build_frame($opcode, $payload, %opt) -> bytes: masked unless mask => 0;
# rsv => 0..7 sets RSV1..3 (4 is RSV1); len16/len64 force that length
# header even for a payload that does not need it; len => N claims a
# length other than the payload's (the payload is sent as it is).
sub build_frame {
    my ($opcode, $payload, %o) = @_;
    $payload //= '';
    utf8::encode($payload) if utf8::is_utf8($payload);

    my $fin = exists $o{fin} ? ($o{fin} ? 1 : 0) : 1;
    my $mask = exists $o{mask} ? ($o{mask} ? 1 : 0) : 1;
    my $len = $o{len} // length $payload;

    my $b0 = ($fin << 7) | ((($o{rsv} // 0) & 7) << 4) | ($opcode & 0xF);
    my $head = chr $b0;
    my $m = $mask << 7;

    if ($o{len64} || $len > 0xFFFF) {
        $head .= chr($m | 127) . pack('NN', int($len / 2**32), $len % 2**32);
    } elsif ($o{len16} || $len > 125) {
        $head .= chr($m | 126) . pack('n', $len);
    } else {
        $head .= chr($m | $len);
    }

    return $head . $payload unless $mask;

    my $key = $o{mask_key} // pack 'N', int rand 2**32;
    return $head . $key . mask_bytes($key, $payload);
}

# XOR with the 4-byte key, repeated
sub mask_bytes {
    my ($key, $data) = @_;
    my $n = length $data;
    return '' unless $n;
    my $k = $key x (int($n / 4) + 1);
    return $data ^ substr($k, 0, $n);
}

# parse_frame(\$buffer) -> a frame taken off the buffer's head, or undef
# when the buffer does not hold a whole one yet
sub parse_frame {
    my ($buf) = @_;
    my $have = length $$buf;
    return undef if $have < 2;

    my ($b0, $b1) = unpack 'CC', $$buf;
    my $masked = $b1 >> 7;
    my $len = $b1 & 0x7F;
    my $off = 2;

    if ($len == 126) {
        return undef if $have < 4;
        $len = unpack 'n', substr($$buf, 2, 2);
        $off = 4;
    } elsif ($len == 127) {
        return undef if $have < 10;
        my ($hi, $lo) = unpack 'NN', substr($$buf, 2, 8);
        $len = $hi * 2**32 + $lo;
        $off = 10;
    }

    my $key = '';
    if ($masked) {
        return undef if $have < $off + 4;
        $key = substr $$buf, $off, 4;
        $off += 4;
    }

    return undef if $have < $off + $len;

    my $payload = substr $$buf, $off, $len;
    substr($$buf, 0, $off + $len, '');
    $payload = mask_bytes($key, $payload) if $masked;

    return { fin => $b0 >> 7, rsv => ($b0 >> 4) & 7, opcode => $b0 & 0xF,
             masked => $masked, payload => $payload };
}

# A close frame's payload -> {code, reason}: no payload is 1005 (RFC 6455
# 7.1.5, "no status received")
sub parse_close {
    my ($payload) = @_;
    return { code => 1005, reason => '' } if length $payload < 2;
    return { code => unpack('n', $payload), reason => substr($payload, 2) };
}

# ------------------------------------------------------------- handshake

sub new_socket {
    my (%o) = @_;
    my $s;
    socket($s, Socket::PF_INET(), Socket::SOCK_STREAM(),
           Socket::IPPROTO_TCP())
        or return (undef, "socket: $!");
    if ($o{rcvbuf}) {
        setsockopt($s, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(),
                   pack('i', $o{rcvbuf}))
            or return (undef, "SO_RCVBUF: $!");
    }
    binmode $s;
    return ($s);
}

sub set_nonblock {
    my ($s) = @_;
    my $flags = fcntl($s, Fcntl::F_GETFL(), 0) // 0;
    fcntl($s, Fcntl::F_SETFL(), $flags | Fcntl::O_NONBLOCK());
}

sub handshake_bytes {
    my ($path, %o) = @_;
    my $key = $o{key} // MIME::Base64::encode_base64(
                            join('', map { chr int rand 256 } 1 .. 16), '');
    my @hdr = (
        [ Host                    => $o{host} // 'localhost' ],
        [ Upgrade                 => 'websocket' ],
        [ Connection              => 'Upgrade' ],
        [ 'Sec-WebSocket-Key'     => $key ],
        [ 'Sec-WebSocket-Version' => $o{version} // 13 ],
    );
    my %extra = %{ $o{headers} || {} };
    my %lc = map { lc($_) => $_ } keys %extra;

    my @lines = (($o{method} // 'GET') . " $path HTTP/" . ($o{http} // '1.1'));
    for my $h (@hdr) {
        my $name = $lc{ lc $h->[0] };
        if (defined $name) {
            my $v = delete $extra{$name};
            push @lines, "$h->[0]: $v" if defined $v;
        } else {
            push @lines, "$h->[0]: $h->[1]";
        }
    }
    push @lines, map { "$_: $extra{$_}" } grep { defined $extra{$_} }
                 sort keys %extra;

    # the key that was sent, if any, for the accept check
    my ($sent) = map { /^Sec-WebSocket-Key: (.*)$/i ? $1 : () } @lines;
    return (join('', map { "$_\r\n" } @lines) . "\r\n", $sent);
}

# ws_connect($port, $path, %opt) -> a DefarmWs (101 and a right accept
# key) or a refusal {status, headers, body, json, error} (blessed
# DefarmWs::Refused).  With nonblock => 1: a DefarmWs in state
# 'handshake' whose ->handshake_step finishes it.
sub ws_connect {
    my ($port, $path, %o) = @_;
    my $timeout = $o{timeout} // 10;

    my ($s, $err) = new_socket(%o);
    return refused(undef, $err) unless $s;

    my $addr = Socket::pack_sockaddr_in($port, Socket::inet_aton('127.0.0.1'));
    my ($bytes, $key) = handshake_bytes($path, %o);

    my $ws = bless { sock => $s, port => $port, key => $key, in => '',
                     out => $bytes, state => 'connecting', msgs => [],
                     frag => undef, eof => 0 }, 'DefarmWs';

    set_nonblock($s);
    unless (connect($s, $addr) || $!{EINPROGRESS}) {
        return refused(undef, "connect to port $port: $!");
    }

    return $ws if $o{nonblock};

    my $deadline = Time::HiRes::time() + $timeout;
    while (1) {
        my $r = $ws->handshake_step;
        return $r if $r;
        my $left = $deadline - Time::HiRes::time();
        return refused(undef, "no handshake answer within ${timeout}s")
            if $left <= 0;
        $ws->wait_io($left > 0.2 ? 0.2 : $left);
    }
}

sub refused {
    my ($res, $err) = @_;
    $res //= { status => undef, headers => {}, body => '' };
    $res->{error} = $err if defined $err;
    $res->{json} //= eval { $Json->decode($res->{body}) };
    return bless $res, 'DefarmWs::Refused';
}

# waits (up to $secs) until the socket can be read or, while there is
# something to send, written
sub wait_io {
    my ($ws, $secs) = @_;
    my $r = '';
    vec($r, fileno $ws->{sock}, 1) = 1;
    my $w = length $ws->{out} ? $r : undef;
    select(my $ro = $r, $w, undef, $secs);
}

# One step of a non-blocking handshake: writes what it can, reads what
# there is.  -> undef while it is not over, else $ws itself (upgraded) or
# a refusal; the object then holds the outcome in ->{state} ('open' or
# 'refused') and ->{refusal}.
sub handshake_step {
    my ($ws) = @_;
    return $ws if $ws->{state} eq 'open';
    return $ws->{refusal} if $ws->{state} eq 'refused';

    $ws->{state} = 'handshake';
    $ws->flush_out;
    $ws->read_some;

    my $end = index $ws->{in}, "\r\n\r\n";
    if ($end < 0) {
        return undef unless $ws->{eof} || $ws->{read_error};
        return $ws->refuse(refused(undef, 'the connection closed before an'
                                   . ' answer: ' . ($ws->{read_error} // 'EOF')));
    }

    my $head = substr $ws->{in}, 0, $end;
    my ($line, @lines) = split /\r\n/, $head;
    my ($status) = $line =~ m{^HTTP/1\.\d (\d{3})};
    my %h;
    for (@lines) {
        next unless /^([^:]+):\s*(.*?)\s*$/;
        my $k = lc $1;
        $h{$k} = exists $h{$k} ? "$h{$k}, $2" : $2;
    }
    my $res = { status => $status, headers => \%h, body => '' };

    if (defined $status && $status == 101) {
        substr($ws->{in}, 0, $end + 4, '');       # frames may follow
        my $want = defined $ws->{key} ? ws_accept_for($ws->{key}) : undef;
        my $got = $h{'sec-websocket-accept'};
        if (!defined $want || !defined $got || $got ne $want) {
            return $ws->refuse(refused($res, 'bad Sec-WebSocket-Accept: '
                                       . ($got // 'none')));
        }
        if (lc($h{upgrade} // '') ne 'websocket'
            || lc($h{connection} // '') !~ /\bupgrade\b/)
        {
            return $ws->refuse(refused($res, '101 without Upgrade: websocket'
                                       . ' and Connection: Upgrade'));
        }
        $ws->{state} = 'open';
        $ws->{headers} = \%h;
        $ws->{status} = 101;
        return $ws;
    }

    # a refusal: its body by Content-Length, else up to the close
    my $body = substr $ws->{in}, $end + 4;
    my $len = $h{'content-length'};
    my $chunked = ($h{'transfer-encoding'} // '') =~ /chunked/i;
    my $whole = $chunked ? $body =~ /(?:^|\r\n)0\r\n\r\n\z/
              : defined $len ? length($body) >= $len
              : 0;
    return undef unless $whole || $ws->{eof} || $ws->{read_error};
    if ($chunked) {
        my $plain = '';
        while ($body =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $size = hex $1;
            last if $size == 0;
            $plain .= substr $body, 0, $size, '';
            $body =~ s/^\r\n//;
        }
        $body = $plain;
    }
    $res->{body} = defined $len ? substr($body, 0, $len) : $body;
    return $ws->refuse(refused($res));
}

sub refuse {
    my ($ws, $r) = @_;
    $ws->{state} = 'refused';
    $ws->{refusal} = $r;
    close $ws->{sock};
    return $r;
}

# ------------------------------------------------------------ the socket

# writes what is queued, as far as the socket takes it now
sub flush_out {
    my ($ws) = @_;
    local $SIG{PIPE} = 'IGNORE';
    while (length $ws->{out}) {
        my $n = syswrite $ws->{sock}, $ws->{out};
        if (!defined $n) {
            return if $!{EAGAIN} || $!{EWOULDBLOCK} || $!{EINTR}
                      || $!{ENOTCONN} || $!{EINPROGRESS};
            $ws->{write_error} = "$!";
            $ws->{out} = '';
            return;
        }
        substr($ws->{out}, 0, $n, '');
    }
}

# reads what there is now (never blocks); -> bytes read
sub read_some {
    my ($ws) = @_;
    my $total = 0;
    while (!$ws->{eof}) {
        my $n = sysread $ws->{sock}, $ws->{in}, 65536, length $ws->{in};
        if (!defined $n) {
            last if $!{EAGAIN} || $!{EWOULDBLOCK} || $!{ENOTCONN}
                    || $!{EINPROGRESS};
            next if $!{EINTR};
            # a reset: the peer is gone as surely as with a FIN
            $ws->{read_error} = "$!";
            $ws->{eof} = 1;
            last;
        }
        if ($n == 0) {
            $ws->{eof} = 1;
            last;
        }
        $total += $n;
    }
    return $total;
}

# send_* queue the frame and write it now, waiting (up to 10 s) until the
# socket took all of it; -> true unless the write failed
sub send_raw {
    my ($ws, $bytes, %o) = @_;
    $ws->{out} .= $bytes;
    my $deadline = Time::HiRes::time() + ($o{timeout} // 10);
    while (1) {
        $ws->flush_out;
        last unless length $ws->{out};
        last if $o{nowait} || Time::HiRes::time() > $deadline;
        $ws->wait_io(0.05);
    }
    return !$ws->{write_error} && !length $ws->{out};
}

sub send_frame {
    my ($ws, $opcode, $payload, %o) = @_;
    return $ws->send_raw(build_frame($opcode, $payload, %o), %o);
}

sub send_text   { my ($ws, $p, %o) = @_; $ws->send_frame(OP_TEXT, $p, %o) }
sub send_binary { my ($ws, $p, %o) = @_; $ws->send_frame(OP_BINARY, $p, %o) }
sub send_ping   { my ($ws, $p, %o) = @_; $ws->send_frame(OP_PING, $p, %o) }
sub send_pong   { my ($ws, $p, %o) = @_; $ws->send_frame(OP_PONG, $p, %o) }
sub send_cont   { my ($ws, $p, %o) = @_; $ws->send_frame(OP_CONT, $p, %o) }

sub send_json {
    my ($ws, $data, %o) = @_;
    return $ws->send_text($Json->encode($data), %o);
}

# send_close($code, $reason): no code, no payload
sub send_close {
    my ($ws, $code, $reason, %o) = @_;
    my $p = defined $code ? pack('n', $code) . ($reason // '') : '';
    return $ws->send_frame(OP_CLOSE, $p, %o);
}

# send_fragmented($opcode, $payload, $n, %opt): the message in $n frames
# (the first of $opcode, the others continuations, FIN on the last);
# between => sub { ... } runs after each frame but the last (to slip a
# control frame in)
sub send_fragmented {
    my ($ws, $opcode, $payload, $n, %o) = @_;
    utf8::encode($payload) if utf8::is_utf8($payload);
    my $between = delete $o{between};
    my $size = int((length($payload) + $n - 1) / $n) || 1;
    my $ok = 1;
    for my $i (0 .. $n - 1) {
        my $part = substr($payload, $i * $size, $size) // '';
        $ok &&= $ws->send_frame($i ? OP_CONT : $opcode, $part, %o,
                                fin => $i == $n - 1);
        $between->($ws, $i) if $between && $i < $n - 1;
    }
    return $ok;
}

# ------------------------------------------------------------- receiving

# the next frame already read, without waiting; a server frame that
# breaks the protocol comes back as {error}
sub next_frame {
    my ($ws) = @_;
    my $f = parse_frame(\$ws->{in}) or return undef;
    my $why;
    if ($f->{masked}) {
        $why = 'a masked frame from the server';
    } elsif ($f->{rsv}) {
        $why = "RSV bits $f->{rsv} set by the server";
    } elsif (!grep { $_ == $f->{opcode} } 0, 1, 2, 8, 9, 10) {
        $why = sprintf 'unknown opcode 0x%X from the server', $f->{opcode};
    } elsif ($f->{opcode} >= 8 && (length $f->{payload} > 125 || !$f->{fin})) {
        $why = 'a control frame over 125 bytes or fragmented';
    }
    if ($why) {
        $f->{error} = $why;
        $ws->{server_error} //= $why;
    }
    push @{ $ws->{frames_seen} }, $f->{opcode} if $ws->{keep_opcodes};
    return $f;
}

# recv_frame($timeout) -> a frame, or undef on timeout or EOF
sub recv_frame {
    my ($ws, $timeout) = @_;
    my $deadline = Time::HiRes::time() + ($timeout // 10);
    while (1) {
        my $f = $ws->next_frame;
        return $f if $f;
        $ws->read_some;
        $f = $ws->next_frame;
        return $f if $f;
        return undef if $ws->{eof};
        my $left = $deadline - Time::HiRes::time();
        return undef if $left <= 0;
        $ws->wait_io($left > 0.5 ? 0.5 : $left);
    }
}

# a data frame (or a continuation) into ->{frag}; -> the whole message
# {opcode, payload} once FIN, else undef
sub assemble {
    my ($ws, $f) = @_;
    if ($f->{opcode} == OP_CONT) {
        unless ($ws->{frag}) {
            $ws->{server_error} //= 'a continuation with no message started';
            return undef;
        }
        $ws->{frag}{payload} .= $f->{payload};
    } else {
        $ws->{server_error} //= 'a new message inside a fragmented one'
            if $ws->{frag};
        $ws->{frag} = { opcode => $f->{opcode}, payload => $f->{payload} };
    }
    return undef unless $f->{fin};
    return delete $ws->{frag};
}

# handles one frame the way a well-behaved client does: a ping answered,
# a close kept (and answered once); -> a whole message, or undef
sub absorb {
    my ($ws, $f, %o) = @_;
    my $op = $f->{opcode};
    if ($op == OP_PING) {
        $ws->{pings}++;
        $ws->send_pong($f->{payload}, nowait => 1)
            if !$o{pings} || $o{pong};
        return { opcode => OP_PING, payload => $f->{payload} } if $o{pings};
        return undef;
    }
    if ($op == OP_PONG) {
        push @{ $ws->{pongs} }, $f->{payload};
        return undef;
    }
    if ($op == OP_CLOSE) {
        $ws->{close} = parse_close($f->{payload});
        return undef;
    }
    return undef if $f->{error};
    return $ws->assemble($f);
}

# decodes a text message; anything else is kept in ->{unexpected}
sub message_json {
    my ($ws, $m) = @_;
    if ($m->{opcode} == OP_PING) {
        return { type => '_ping', payload => $m->{payload} };
    }
    if ($m->{opcode} != OP_TEXT) {
        push @{ $ws->{unexpected} }, $m;
        return undef;
    }
    my $data = eval { $Json->decode($m->{payload}) };
    unless (ref $data eq 'HASH') {
        push @{ $ws->{unexpected} }, $m;
        $ws->{server_error} //= "a text message that is not a JSON object:"
                              . " $m->{payload}";
        return undef;
    }
    $ws->{last_text} = $m->{payload};
    return $data;
}

# recv_json($timeout, pings => 1) -> the next JSON message (see the top)
sub recv_json {
    my ($ws, $timeout, %o) = @_;
    my $deadline = Time::HiRes::time() + ($timeout // 10);
    while (1) {
        return shift @{ $ws->{msgs} } if @{ $ws->{msgs} };
        return undef if $ws->{close};
        my $left = $deadline - Time::HiRes::time();
        my $f = $ws->recv_frame($left > 0 ? $left : 0) or return undef;
        my $m = $ws->absorb($f, %o) or next;
        my $data = $ws->message_json($m);
        return $data if $data;
    }
}

# recv_type($type, $timeout) -> the next message of that type; those of
# other types before it are kept in ->{skipped}
sub recv_type {
    my ($ws, $type, $timeout, %o) = @_;
    my $deadline = Time::HiRes::time() + ($timeout // 10);
    while (1) {
        my $left = $deadline - Time::HiRes::time();
        my $m = $ws->recv_json($left > 0 ? $left : 0, %o) or return undef;
        return $m if ($m->{type} // '') eq $type;
        push @{ $ws->{skipped} }, $m;
    }
}

# recv_close($timeout, pong => 0) -> {code, reason} of the server's close
# frame, or undef; the messages before it (pings included) are kept in
# ->{skipped}; pings are answered unless pong => 0
sub recv_close {
    my ($ws, $timeout, %o) = @_;
    my $pong = $o{pong} // 1;
    my $deadline = Time::HiRes::time() + ($timeout // 10);
    until ($ws->{close}) {
        my $left = $deadline - Time::HiRes::time();
        my $f = $ws->recv_frame($left > 0 ? $left : 0) or last;
        my $m = $ws->absorb($f, pings => 1, pong => $pong) or next;
        push @{ $ws->{skipped} }, $m;
    }
    return $ws->{close};
}

# wait_eof($timeout) -> true once the server closed TCP (what it sent
# before is read and dropped, a close frame kept in ->{close})
sub wait_eof {
    my ($ws, $timeout) = @_;
    my $deadline = Time::HiRes::time() + ($timeout // 10);
    until ($ws->{eof}) {
        while (my $f = $ws->next_frame) {
            $ws->{close} //= parse_close($f->{payload})
                if $f->{opcode} == OP_CLOSE;
        }
        $ws->read_some;
        last if $ws->{eof};
        my $left = $deadline - Time::HiRes::time();
        last if $left <= 0;
        $ws->wait_io($left > 0.5 ? 0.5 : $left);
    }
    while (my $f = $ws->next_frame) {
        $ws->{close} //= parse_close($f->{payload})
            if $f->{opcode} == OP_CLOSE;
    }
    return $ws->{eof};
}

# drain(): reads and handles whatever is there now, without waiting;
# -> the JSON messages that were whole
sub drain {
    my ($ws, %o) = @_;
    $ws->read_some;
    $ws->flush_out;
    my @got;
    while (my $f = $ws->next_frame) {
        my $m = $ws->absorb($f, %o) or next;
        my $data = $ws->message_json($m);
        push @got, $data if $data;
    }
    return @got;
}

sub close_socket {
    my ($ws) = @_;
    close $ws->{sock} if $ws->{sock};
    $ws->{state} = 'closed';
}

sub fileno_of { fileno $_[0]->{sock} }

# ------------------------------------------------ many sockets at once

# connect_many($port, \@paths, batch => 500, timeout => 120, %ws_opts) ->
# (\@open, \@refused): one handshake per path, at most `batch` in flight;
# nothing blocks on any one socket (poll(2), so no FD_SETSIZE limit).
# on_open => sub { my ($ws, $i) = @_ } runs as each one opens.
sub connect_many {
    my ($port, $paths, %o) = @_;
    my $batch = delete $o{batch} // 500;
    my $timeout = delete $o{timeout} // 120;
    my $on_open = delete $o{on_open};
    my $deadline = Time::HiRes::time() + $timeout;

    my (@open, @refused, %busy);
    my $next = 0;
    my $poll = IO::Poll->new;

    while ($next < @$paths || %busy) {
        while ($next < @$paths && keys %busy < $batch) {
            my $ws = ws_connect($port, $paths->[$next], %o, nonblock => 1);
            if (ref $ws ne 'DefarmWs') {
                push @refused, $ws;
            } else {
                $ws->{index} = $next;
                $busy{ fileno $ws->{sock} } = $ws;
                $poll->mask($ws->{sock} => IO::Poll::POLLIN()
                                           | IO::Poll::POLLOUT());
            }
            $next++;
        }

        if (Time::HiRes::time() > $deadline) {
            for my $ws (values %busy) {
                push @refused, $ws->refuse(refused(undef,
                    "no handshake answer within ${timeout}s"));
            }
            last;
        }

        $poll->poll(0.5);
        for my $fd (keys %busy) {
            my $ws = $busy{$fd};
            my $ev = $poll->events($ws->{sock});
            next unless $ev || !length $ws->{out};
            my $r = $ws->handshake_step;
            $poll->mask($ws->{sock} => IO::Poll::POLLIN()) unless length $ws->{out};
            next unless $r;
            delete $busy{$fd};
            $poll->remove($ws->{sock});
            if (ref $r eq 'DefarmWs') {
                push @open, $ws;
                $on_open->($ws, $ws->{index}) if $on_open;
            } else {
                push @refused, $r;
            }
        }
    }

    return (\@open, \@refused);
}

# pump_many(\@ws, sub { my ($ws, $msg) = @_; ... }, $timeout, until =>
# sub { 1 when done }) -> true if `until` became true in time: reads every
# socket that has something (answering pings), the callback seeing each
# JSON message; `until` is checked after each round.
sub pump_many {
    my ($list, $cb, $timeout, %o) = @_;
    my $until = $o{until} // sub { 0 };
    my $deadline = Time::HiRes::time() + ($timeout // 60);
    my $poll = IO::Poll->new;
    my %by_fd;
    for my $ws (@$list) {
        next if $ws->{eof} || $ws->{state} ne 'open';
        $by_fd{ fileno $ws->{sock} } = $ws;
        $poll->mask($ws->{sock} => IO::Poll::POLLIN());
    }

    # what a handshake read along with the 101 is handled first
    for my $ws (values %by_fd) {
        $cb->($ws, $_) for $ws->drain;
    }

    while (1) {
        return 1 if $until->();
        my $left = $deadline - Time::HiRes::time();
        return 0 if $left <= 0;
        $poll->poll($left > 0.2 ? 0.2 : $left);
        for my $h ($poll->handles(IO::Poll::POLLIN() | IO::Poll::POLLHUP()
                                  | IO::Poll::POLLERR()))
        {
            my $ws = $by_fd{ fileno $h } or next;
            $cb->($ws, $_) for $ws->drain;
            if ($ws->{eof}) {
                $poll->remove($h);
                $cb->($ws, { type => '_eof' }) if $o{eof_events};
            }
        }
    }
}

package DefarmWs::Refused;

# what ws_connect returns when there was no upgrade: {status, headers,
# body, json, error}

sub status { $_[0]->{status} }

1;
