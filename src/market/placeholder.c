/* placeholder until the subsystem lands */
typedef int stratd_market_placeholder;
