/* Event times in snapshot files: ISO 8601 ("2026-11-22", "2026-11-22 08:30", "2026-11-22T08:30:00.5Z",
 * "...+08:00") or Unix time in seconds or milliseconds (all digits). A time without a zone is
 * in the default zone (China, +08:00, unless configured). Result: Unix milliseconds. */
#ifndef ANNING_EVENTTIME_H
#define ANNING_EVENTTIME_H

#include <stddef.h>
#include <stdint.h>

static inline int64_t an_days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static inline int an_digits(const unsigned char *s, size_t n, size_t at, int count, int *out) {
    int v = 0;
    if (at + (size_t)count > n) return 0;
    for (int i = 0; i < count; i++) {
        unsigned char c = s[at + i];
        if (c < '0' || c > '9') return 0;
        v = v * 10 + (c - '0');
    }
    *out = v;
    return 1;
}

/* Returns 1 and stores Unix milliseconds, or 0 for text that is not a time. */
static inline int an_parse_time(const unsigned char *s, size_t n, int default_offset_minutes,
                                int64_t *out_ms) {
    int year, month, day, hour = 0, minute = 0, second = 0, oh = 0, om = 0;
    int64_t ms = 0;
    size_t i;
    while (n && s[n - 1] == ' ') n--;
    while (n && s[0] == ' ') { s++; n--; }
    if (n == 0) return 0;
    for (i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++) {}
    if (i == n) { /* Unix time */
        if (n > 13) return 0;
        int64_t v = 0;
        for (i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
        *out_ms = n >= 12 ? v : v * 1000;
        return 1;
    }
    if (!an_digits(s, n, 0, 4, &year) || n < 10 || s[4] != '-' || !an_digits(s, n, 5, 2, &month) ||
        s[7] != '-' || !an_digits(s, n, 8, 2, &day))
        return 0;
    i = 10;
    if (i < n && (s[i] == 'T' || s[i] == ' ')) {
        if (!an_digits(s, n, i + 1, 2, &hour) || i + 3 >= n || s[i + 3] != ':' ||
            !an_digits(s, n, i + 4, 2, &minute))
            return 0;
        i += 6;
        if (i < n && s[i] == ':') {
            if (!an_digits(s, n, i + 1, 2, &second)) return 0;
            i += 3;
            if (i < n && (s[i] == '.' || s[i] == ',')) {
                int scale = 100, any = 0;
                for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, any = 1) {
                    ms += (s[i] - '0') * scale;
                    scale /= 10;
                }
                if (!any) return 0;
            }
        }
    }
    int offset = default_offset_minutes;
    if (i < n) {
        if (s[i] == 'Z' || s[i] == 'z') {
            offset = 0;
            i++;
        } else if (s[i] == '+' || s[i] == '-') {
            int sign = s[i] == '-' ? -1 : 1;
            if (!an_digits(s, n, i + 1, 2, &oh)) return 0;
            i += 3;
            if (i < n && s[i] == ':') i++;
            if (i < n) {
                if (!an_digits(s, n, i, 2, &om)) return 0;
                i += 2;
            }
            if (oh > 14 || om > 59) return 0;
            offset = sign * (oh * 60 + om);
        }
        if (i != n) return 0;
    }
    if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 60) return 0;
    static const int month_days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day > month_days[month - 1] || (month == 2 && day == 29 && !leap)) return 0;
    int64_t days = an_days_from_civil(year, month, day);
    int64_t seconds = days * 86400 + hour * 3600 + minute * 60 + second - (int64_t)offset * 60;
    *out_ms = seconds * 1000 + ms;
    return 1;
}

#endif
