#!/usr/bin/perl
# A second opinion: what Sisimai (Debian's libsisimai-perl) reads in each message named on the
# command line, as one JSON object per file ({"file", "recipients": [{"address", "action",
# "reason", "status", "diagnostic"}]}). Used by compare.py; the expected answers are ours.
use strict;
use warnings;
use Sisimai;
use JSON::PP;

my $json = JSON::PP->new->canonical(1)->utf8(1);
for my $file (@ARGV) {
    open(my $fh, '<:raw', $file) or die "$file: $!";
    my $raw = do { local $/; <$fh> };
    close $fh;
    $raw =~ s/^From [^\n]*\n//;    # an mbox separator, if any
    my $data = eval { Sisimai->make(\$raw, 'delivered' => 1, 'vacation' => 1) } || [];
    my @rcpts = map {
        {
            address    => lc($_->recipient->address // ''),
            action     => $_->action // '',
            reason     => $_->reason // '',
            status     => $_->deliverystatus // '',
            diagnostic => $_->diagnosticcode // '',
        }
    } @$data;
    print $json->encode({ file => $file, recipients => \@rcpts }), "\n";
}
