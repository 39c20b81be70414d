/* Phone-number normalisation to E.164 digits (SPEC §3), on ASCII text.
 *
 * Text that is not ASCII must be NFKC-normalised by the caller first (full-width digits become
 * ASCII there); any byte >= 0x80 that is left is an invalid character. Pure C, no Python: the
 * CSV parser uses the same code on raw bytes.
 */
#ifndef ANNING_NUMBER_H
#define ANNING_NUMBER_H

#include <stddef.h>
#include <stdint.h>
#include "country_table.h"

enum an_number_status {
    AN_NUM_OK = 0,
    AN_NUM_EMPTY,          /* nothing but separators */
    AN_NUM_BAD_CHAR,       /* a character that is neither a digit nor a separator */
    AN_NUM_LONE_PLUS,      /* '+' and no digits */
    AN_NUM_MISPLACED_PLUS, /* '+' anywhere but first */
    AN_NUM_TOO_SHORT,
    AN_NUM_TOO_LONG,
    AN_NUM_UNKNOWN_COUNTRY,
    AN_NUM_BAD_LENGTH,     /* length impossible for the country */
    AN_NUM_NOT_CN,         /* +86 but neither a mobile nor a fixed-line number */
    AN_NUM_STATUS_COUNT
};

#define AN_MAX_DIGITS 15          /* E.164 */
#define AN_MAX_SCAN_DIGITS 24     /* digits read before giving up as too long */
#define AN_NUMBER_LIMIT 1000000000000000ULL  /* 10^15: every E.164 number is below */

static const uint64_t an_pow10[20] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL,
    100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL,
    10000000000000ULL, 100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
    100000000000000000ULL, 1000000000000000000ULL, 10000000000000000000ULL};

static inline uint64_t an_digits_value(const char *d, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v * 10 + (uint64_t)(d[i] - '0');
    return v;
}

/* China (+86) national significant numbers. Mobile: 11 digits 1[3-9]. Fixed line: an area code
 * (10, 2x, or [3-9]xx but not 86x, which phonenumbers never reads as one) and a 7-8 digit
 * subscriber number. Also shapes phonenumbers (the oracle) calls valid: a short service number
 * after an area code (5-6 digits 9xxxx or 1xxxx, as 95555, 10010, 12345, 1010xxxx; 4 digits
 * 123x after a 3-digit code), 10800 toll-free, and 8-digit premium rate 16[08]xxxxx. */
static inline int an_cn_national_ok(const char *d, int n) {
    if (n < 7 || n > 12) return 0;
    if (d[0] == '1') {
        if (d[1] == '6' && n == 8) return d[2] == '0' || d[2] == '8';
        if (d[1] >= '3' && d[1] <= '9') return n == 11;
        if (d[1] != '0') return 0;
        if (n == 12) return d[2] == '8' && d[3] == '0' && d[4] == '0';
        /* Beijing: area code 10 */
    } else if (d[0] == '0' || (d[0] == '8' && d[1] == '6')) {
        return 0;
    }
    int area = (d[0] == '1' || d[0] == '2') ? 2 : 3;
    int sub = n - area;
    if (sub == 7 || sub == 8) return 1;
    if (d[area] == '9') return sub == 5 || sub == 6;
    return d[area] == '1' && sub >= 4 && sub <= 6;
}

static inline int an_length_ok(int cc, int n) {
    return n > 0 && n < 32 && ((an_countries[cc].lengths >> n) & 1u);
}

/* The number (n digits) matches country cc's general national-number pattern in full: a walk of
 * the pattern's DFA. (phonenumbers calls this "viable".) */
static inline int an_viable(int cc, const char *d, int n) {
    int s = an_countries[cc].dfa;
    for (int i = 0; i < n && s >= 0; i++) s = an_dfa[s][d[i] - '0'];
    return s >= 0 && an_dfa_accept[s];
}

/* The first of country cc's national prefix rules that matches the number, or NULL: the match
 * of its national_prefix_for_parsing, whose alternatives the rules are, in the order Python's
 * regex engine tries them. */
static inline const an_rule *an_prefix_rule(int cc, const char *d, int n) {
    const an_country *c = &an_countries[cc];
    for (int r = c->rule; r < c->rule + c->rules; r++) {
        const an_rule *rule = &an_rules[r];
        if (rule->anchored ? n != rule->len : n < rule->len) continue;
        const uint16_t *m = an_rule_masks + rule->masks;
        int i = 0;
        while (i < rule->len && ((m[i] >> (d[i] - '0')) & 1u)) i++;
        if (i == rule->len) return rule;
    }
    return NULL;
}

/* phonenumbers keeps a number with its national prefix stripped only if its length is possible
 * or too long, not too short, local-only or an impossible length in between. */
static inline int an_keeps_stripped(int cc, int n) {
    const an_country *c = &an_countries[cc];
    if (n < 32 && ((c->local_only >> n) & 1u)) return 0;
    if (n < 32 && ((c->possible >> n) & 1u)) return 1;
    return c->possible != 0 && n > c->max_possible;
}

/* Strip a national (trunk) prefix or carrier code from a foreign number, or rewrite it, as
 * phonenumbers' parse does after "+CC" (its maybe_strip_national_prefix_carrier_code): the first
 * matching rule says what the number becomes; that is taken unless the number as written was
 * viable and the new one is not, or the new length is not kept. "+44 (0)20 ..." is +44 20 ...;
 * "+375 (0)801 ..." keeps its 8 after the 0; Norfolk Island's 5-digit numbers get a 3 in front.
 * `buf` (at least AN_MAX_SCAN_DIGITS + 8 chars) may receive the new digits. */
static inline void an_national_prefix(int cc, const char **d, int *n, char *buf) {
    const an_rule *rule = an_prefix_rule(cc, *d, *n);
    if (rule == NULL) return;
    int m = 0;
    for (int i = 0; i < rule->lit_len; i++) buf[m++] = rule->lit[i];
    for (int i = rule->keep_from; i < rule->keep_to; i++) buf[m++] = (*d)[i];
    for (int i = rule->len; i < *n; i++) buf[m++] = (*d)[i];
    if (an_viable(cc, *d, *n) && !an_viable(cc, buf, m)) return;
    if (!an_keeps_stripped(cc, m)) return;
    *d = buf;
    *n = m;
}

static inline int an_cc_digits(int cc) { return cc >= 100 ? 3 : (cc >= 10 ? 2 : 1); }

/* A national prefix at the start of a Chinese number, as phonenumbers strips it (its
 * national_prefix_for_parsing for CN): the trunk 0, or an IP-dialling carrier prefix 1[12]xx or
 * 179xx ("17951 138 1234 5678" is 8613812345678). Its length, or 0. */
static inline int an_cn_prefix(const char *d, int n) {
    if (n > 1 && d[0] == '0') return 1;
    if (n > 5 && d[0] == '1' && (d[1] == '1' || d[1] == '2' || (d[1] == '7' && d[2] == '9')))
        return 5;
    return 0;
}

/* A Chinese number after dropping at most `strips` national prefixes; on success *d and *n are
 * the national significant number. */
static inline int an_cn_strip(const char **d, int *n, int strips) {
    if (an_cn_national_ok(*d, *n)) return 1;
    int k = strips > 0 ? an_cn_prefix(*d, *n) : 0;
    if (k == 0) return 0;
    const char *rest = *d + k;
    int m = *n - k;
    if (!an_cn_strip(&rest, &m, strips - 1)) return 0;
    *d = rest;
    *n = m;
    return 1;
}

/* Validate a national significant number for country `cc`; on success store the E.164 value.
 * `strips` national prefixes written before it may be dropped (1 after "+CC", 2 after "86"
 * without '+', where phonenumbers strips one when it removes the country code and one more).
 * For China these are a trunk 0 ("+86 0755 ...") or a carrier prefix. For other countries
 * (strips > 0) the country's national prefix rules are applied once, as an_national_prefix
 * describes: "+49 (0)30 1234567" is 49301234567 though 9 digits are as possible as 8 there,
 * while "+81 0037..." and "+375 801..." keep their 0 and 8 (numbers that start so). The length
 * accepted is then one the country table holds (see tools/gen_country_table.py). */
static inline int an_finish(int cc, const char *d, int n, int strips, uint64_t *out) {
    char buf[AN_MAX_SCAN_DIGITS + 8];
    int ccd = an_cc_digits(cc);
    if (cc == 86) {
        if (!an_cn_strip(&d, &n, strips)) {
            if (strips > 0 && n > 1 && d[0] == '0') n--;
            if (n < 7) return AN_NUM_TOO_SHORT;
            if (n > 12) return AN_NUM_TOO_LONG;
            return AN_NUM_NOT_CN;
        }
    } else {
        if (strips > 0) an_national_prefix(cc, &d, &n, buf);
        if (ccd + n < 7) return AN_NUM_TOO_SHORT;
        if (ccd + n > AN_MAX_DIGITS) return AN_NUM_TOO_LONG;
        if (!an_length_ok(cc, n)) return AN_NUM_BAD_LENGTH;
    }
    *out = (uint64_t)cc * an_pow10[n] + an_digits_value(d, n);
    return AN_NUM_OK;
}

/* d: digits after '+' or '00'. Country codes are prefix-free: the first 1-3 digit prefix that
 * is a known code is the code. No code starts with 0. `strips`: as for an_finish. */
static inline int an_international(const char *d, int n, int strips, uint64_t *out) {
    int cc = 0;
    if (d[0] == '0') return n < 7 ? AN_NUM_TOO_SHORT : AN_NUM_UNKNOWN_COUNTRY;
    for (int k = 1; k <= 3 && k < n; k++) {
        cc = cc * 10 + (d[k - 1] - '0');
        if (an_countries[cc].lengths) return an_finish(cc, d + k, n - k, strips, out);
    }
    if (n < 7) return AN_NUM_TOO_SHORT;
    return AN_NUM_UNKNOWN_COUNTRY;
}

/* China's international prefixes after an IP-dialling carrier, 1[12]xx00 and 179xx00, followed
 * by a country code (which never starts with 0): phonenumbers reads "17951 00 44 20..." as
 * +44 20... */
static inline int an_cn_carrier_idd(const char *d, int n) {
    return n > 7 && d[0] == '1' && (d[1] == '1' || d[1] == '2' || (d[1] == '7' && d[2] == '9')) &&
           d[5] == '0' && d[6] == '0' && d[7] != '0';
}

static inline int an_national(int default_cc, const char *d, int n, uint64_t *out) {
    char cc_text[4];
    int ccd = an_cc_digits(default_cc), status;
    uint64_t value;
    for (int i = ccd - 1, c = default_cc; i >= 0; i--, c /= 10) cc_text[i] = (char)('0' + c % 10);
    /* The national reading first; the country code written without '+' when that fails. */
    if (default_cc == 86) {
        status = an_finish(86, d, n, 1, &value);
    } else {
        const char *nd = d;
        int nn = n;
        if (nn > 1 && nd[0] == '0') { nd++; nn--; }
        status = an_finish(default_cc, nd, nn, 1, &value);
    }
    if (status == AN_NUM_OK) { *out = value; return AN_NUM_OK; }
    if (n > ccd) {
        int i = 0;
        while (i < ccd && d[i] == cc_text[i]) i++;
        if (i == ccd && an_finish(default_cc, d + ccd, n - ccd, 2, &value) == AN_NUM_OK) {
            *out = value; return AN_NUM_OK;
        }
    }
    return status;
}

static inline int an_is_separator(unsigned char c) {
    return c == ' ' || c == '-' || c == '.' || c == '(' || c == ')';
}

/* Parse `len` bytes of ASCII text. On a bad character, *bad_at is its offset. */
static inline int an_parse_number(const unsigned char *s, size_t len, int default_cc,
                                  uint64_t *out, size_t *bad_at) {
    char digits[AN_MAX_SCAN_DIGITS];
    int n = 0, plus = 0, seen = 0;
    size_t i = 0;
    while (i < len && s[i] == ' ') i++;
    if (len - i >= 4 && (s[i] | 0x20) == 't' && (s[i + 1] | 0x20) == 'e' &&
        (s[i + 2] | 0x20) == 'l' && s[i + 3] == ':')
        i += 4;
    for (; i < len; i++) {
        unsigned char c = s[i];
        if (c >= '0' && c <= '9') {
            if (n == AN_MAX_SCAN_DIGITS) return AN_NUM_TOO_LONG;
            digits[n++] = (char)c;
            seen = 1;
        } else if (c == '+') {
            /* As phonenumbers (the oracle, SPEC §3) reads a '+': one run of them before the
             * digits ("++86 138..." is +86 138...), and after the digits only as trailing junk
             * among separators ("138 1234 5678 +" is the number; fuzz/fuzz_normalize.py found
             * both rejected). A '+' between digits, or apart from the first, stays misplaced. */
            if (seen) {
                size_t j = i;
                while (j < len && (s[j] == '+' || an_is_separator(s[j]))) j++;
                if (j == len) break;
                *bad_at = i;
                return AN_NUM_MISPLACED_PLUS;
            }
            if (plus && s[i - 1] != '+') { *bad_at = i; return AN_NUM_MISPLACED_PLUS; }
            plus = 1;
        } else if (!an_is_separator(c)) {
            *bad_at = i;
            return AN_NUM_BAD_CHAR;
        }
    }
    if (n == 0) return plus ? AN_NUM_LONE_PLUS : AN_NUM_EMPTY;
    /* "+00CC...": the '+' and China's international prefix 00 both written; phonenumbers reads
     * the 00 as the prefix. */
    if (plus && n > 2 && digits[0] == '0' && digits[1] == '0')
        return an_international(digits + 2, n - 2, 1, out);
    if (plus) return an_international(digits, n, 1, out);
    if (n > 2 && digits[0] == '0' && digits[1] == '0')
        return an_international(digits + 2, n - 2, 1, out);
    if (default_cc == 86 && an_cn_carrier_idd(digits, n))
        return an_international(digits + 7, n - 7, 1, out);
    return an_national(default_cc, digits, n, out);
}

/* An E.164 value (no '+') is well formed: a known country code and a possible length. */
static inline int an_check_e164(uint64_t v) {
    char digits[20];
    int n = 1;
    uint64_t out, rest = v;
    if (v == 0 || v >= AN_NUMBER_LIMIT) return AN_NUM_TOO_LONG;
    while (n < 16 && v >= an_pow10[n]) n++;
    for (int k = n - 1; k >= 0; k--, rest /= 10) digits[k] = (char)('0' + rest % 10);
    /* No prefix is dropped: the digits after the country code are the national number as they
     * are, so every value an_parse_number returns passes. */
    return an_international(digits, n, 0, &out);
}

#endif
