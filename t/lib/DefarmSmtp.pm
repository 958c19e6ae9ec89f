package DefarmSmtp;

# A local SMTP server for the tests: smtp_sink($dir, %opt) forks one on a
# free loopback port and returns {port, pid}; each message it accepts is
# written to $dir/mail-N.eml (envelope sender and recipients first, as
# "MAIL FROM:" and "RCPT TO:" lines).  refuse_first => N answers the first
# N connections "421" and closes them; stall_first => N accepts the first
# N and never answers them.  smtp_mails($dir) lists the messages so far.
# Written for this project from RFC 5321; it speaks just enough SMTP.

use strict;
use warnings;
use IO::Socket::INET;
use POSIX ();
use Exporter 'import';

our @EXPORT = qw(smtp_sink smtp_stop smtp_mails);

sub smtp_sink {
    my ($dir, %opt) = @_;
    mkdir $dir;
    unlink glob "$dir/mail-*.eml";
    my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                       Listen => 16, ReuseAddr => 1, Proto => 'tcp')
        or die "smtp_sink: $!";
    my $port = $listen->sockport;
    my $pid = fork // die "fork: $!";
    if ($pid) {
        close $listen;
        return { port => $port, pid => $pid };
    }

    my ($n, $mails) = (0, 0);
    my @stalled;
    while (my $c = $listen->accept) {
        $n++;
        $c->autoflush(1);
        if ($n <= ($opt{refuse_first} // 0)) {
            print $c "421 4.3.2 try again later\r\n";
            close $c;
            next;
        }
        if ($n <= ($opt{refuse_first} // 0) + ($opt{stall_first} // 0)) {
            push @stalled, $c;                   # held open, never answered
            next;
        }
        print $c "220 sink ESMTP\r\n";
        my ($from, @rcpt, $data);
        while (defined(my $line = <$c>)) {
            if (defined $data) {
                if ($line eq ".\r\n") {
                    $mails++;
                    open my $fh, '>', "$dir/mail-$mails.tmp" or die $!;
                    print $fh "MAIL FROM:$from\n", map({ "RCPT TO:$_\n" } @rcpt), $data;
                    close $fh;
                    rename "$dir/mail-$mails.tmp", "$dir/mail-$mails.eml";
                    undef $data;
                    print $c "250 2.0.0 queued as $mails\r\n";
                } else {
                    $line =~ s/^\.\././;
                    $data .= $line;
                }
                next;
            }
            if ($line =~ /^(EHLO|HELO)/i) {
                print $c "250-sink\r\n250 8BITMIME\r\n";
            } elsif ($line =~ /^MAIL FROM:\s*(\S+)/i) {
                ($from, @rcpt) = ($1);
                print $c "250 2.1.0 ok\r\n";
            } elsif ($line =~ /^RCPT TO:\s*(\S+)/i) {
                push @rcpt, $1;
                print $c "250 2.1.5 ok\r\n";
            } elsif ($line =~ /^DATA/i) {
                $data = '';
                print $c "354 go ahead\r\n";
            } elsif ($line =~ /^QUIT/i) {
                print $c "221 2.0.0 bye\r\n";
                last;
            } else {
                print $c "250 ok\r\n";
            }
        }
        close $c;
    }
    POSIX::_exit(0);
}

sub smtp_stop {
    my ($sink) = @_;
    kill 'KILL', $sink->{pid};
    waitpid $sink->{pid}, 0;
}

sub smtp_mails {
    my ($dir) = @_;
    my @m;
    for my $f (sort { ($a =~ /(\d+)\.eml$/)[0] <=> ($b =~ /(\d+)\.eml$/)[0] } glob "$dir/mail-*.eml") {
        open my $fh, '<', $f or next;
        local $/;
        push @m, scalar <$fh>;
    }
    return @m;
}

1;
