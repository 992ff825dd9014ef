/**
 * The one handle on the C library. Every koffi binding of a libc function is made from
 * this object, so the library is loaded once and there is one place to audit what ferryd
 * calls outside Node.
 */
import koffi from "koffi";

export const libc = koffi.load("libc.so.6");
