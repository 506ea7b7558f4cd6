// pgjdbc against Flywheel's Postgres front door: a prepared statement with a parameter, the
// metadata BI tools read (tables and views, columns), a Flywheel statement. Run by
// tests/clients/test_postgres.py with `java -cp postgresql.jar JdbcCheck.java URL`; prints one line
// per fact, which the test checks.
import java.sql.*;

public class JdbcCheck {
    public static void main(String[] args) throws Exception {
        String url = args[0];
        try (Connection c = DriverManager.getConnection(url, "flywheel", "")) {
            try (PreparedStatement p = c.prepareStatement("SELECT user_id, amount FROM transactions WHERE user_id = ? ORDER BY amount")) {
                p.setLong(1, 1);
                try (ResultSet r = p.executeQuery()) {
                    while (r.next()) System.out.println("row " + r.getLong(1) + " " + r.getDouble(2));
                }
            }
            DatabaseMetaData md = c.getMetaData();
            System.out.println("product " + md.getDatabaseProductName() + " " + md.getDatabaseProductVersion());
            try (ResultSet r = md.getTables(null, "public", "%", null)) {
                while (r.next()) System.out.println("table " + r.getString("TABLE_NAME") + " " + r.getString("TABLE_TYPE"));
            }
            try (ResultSet r = md.getColumns(null, "public", "user_txn", "%")) {
                while (r.next()) System.out.println("column " + r.getString("COLUMN_NAME") + " " + r.getString("TYPE_NAME"));
            }
            try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SHOW FEATURE VIEWS")) {
                while (r.next()) System.out.println("view " + r.getString(1));
            }
        }
    }
}
